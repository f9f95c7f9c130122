"""The ``torch`` backend: the reference of perceptual_fast.distances, on any device and dtype, differentiable."""

from __future__ import annotations

from typing import List

from ..distances import layer_terms
from .base import Backend, DistanceRequest, Terms


class TorchBackend(Backend):
    name = "torch"

    def unsupported(self, request: DistanceRequest) -> List[str]:
        return []

    def compute(self, request: DistanceRequest) -> List[Terms]:
        ref = request.feats[0]
        return [layer_terms(ref, other, request.distances, request.lin) for other in request.feats[1:]]
