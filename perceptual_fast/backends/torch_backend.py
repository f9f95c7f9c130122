"""The ``torch`` backend: the reference of perceptual_fast.distances, on any device and dtype."""

from __future__ import annotations

from typing import Dict, List

from torch import Tensor

from ..distances import layer_terms
from .base import Backend, DistanceRequest


class TorchBackend(Backend):
    name = "torch"

    def unsupported(self, request: DistanceRequest) -> List[str]:
        return []

    def layer_terms(self, request: DistanceRequest) -> Dict[str, Tensor]:
        return layer_terms(request.feats0, request.feats1, request.distances, request.lin)
