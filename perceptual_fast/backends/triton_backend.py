"""The ``triton`` backend: kernels/triton/fused_distance.py (shipped as perceptual_fast.kernels.triton).

Runs on CUDA tensors; on CPU tensors only under ``TRITON_INTERPRET=1`` (the interpreter CI uses).
Nothing is imported from triton until a request is actually run.
"""

from __future__ import annotations

import importlib.util
import os
from typing import List

import torch

from .base import Backend, DistanceRequest, Terms
from .common import dtype_and_grad_reasons, nchw

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class TritonBackend(Backend):
    name = "triton"

    def unsupported(self, request: DistanceRequest) -> List[str]:
        reasons = []
        if importlib.util.find_spec("triton") is None:
            reasons.append("the triton package is not installed")
        devices = {t.device for t in request.tensors}
        if len(devices) != 1:
            reasons.append(f"all features must be on one device, got {sorted(map(str, devices))}")
        elif next(iter(devices)).type == "cpu":
            if os.environ.get("TRITON_INTERPRET") != "1":
                reasons.append("it runs on CUDA tensors (CPU tensors only with TRITON_INTERPRET=1, the interpreter)")
        elif next(iter(devices)).type != "cuda":
            reasons.append(f"it runs on CUDA tensors, not {next(iter(devices)).type}")
        return reasons + dtype_and_grad_reasons(request, DTYPES)

    def compute(self, request: DistanceRequest) -> List[Terms]:
        from ..kernels.triton.fused_distance import fused_distance_triton

        feats = [[nchw(t) for t in lst] for lst in request.feats]  # the Triton kernels read NCHW samples
        return fused_distance_triton(feats, request.distances, request.lin)
