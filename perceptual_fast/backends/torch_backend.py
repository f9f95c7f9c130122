"""The ``torch`` backend: the reference of perceptual_fast.distances, on any device and dtype, differentiable."""

from __future__ import annotations

from typing import List

import torch

from ..distances import layer_terms
from .base import Backend, DistanceRequest, Terms


class TorchBackend(Backend):
    name = "torch"

    def unsupported(self, request: DistanceRequest) -> List[str]:
        return []

    def compute(self, request: DistanceRequest) -> List[Terms]:
        # 16-bit features are widened (exactly) to float32: the reference never computes in 16 bits.
        feats = [[t.float() if t.dtype in (torch.bfloat16, torch.float16) else t for t in lst] for lst in request.feats]
        return [layer_terms(feats[0], other, request.distances, request.lin) for other in feats[1:]]
