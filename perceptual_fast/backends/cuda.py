"""The ``cuda`` backend: kernels/cuda device code launched from csrc/ (perceptual_fast._C built with CUDA).

Takes raw device pointers and torch's current CUDA stream; float32, bfloat16 or float16 maps,
float32 accumulation. Available only when the extension was built with PERCEPTUAL_FAST_CUDA.
"""

from __future__ import annotations

from typing import List

import torch

from .base import Backend, DistanceRequest, Terms
from .common import dtype_and_grad_reasons
from .cpp import DISTANCES_ORDER, _nchw, load_extension

_ELEMENT = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def fused_distance_cuda(request: DistanceRequest) -> List[Terms]:
    """Runs ``request`` on the CUDA kernels: one ``{name: [N, L]}`` float32 per comparison."""
    ext = load_extension()
    feats = [[_nchw(t.detach()) for t in layer_list] for layer_list in request.feats]
    count, n, layers = len(feats), feats[0][0].shape[0], len(feats[0])
    device = feats[0][0].device
    lin = None
    if "lpips" in request.distances:
        lin = [w.detach().to(device=device, dtype=torch.float32).contiguous() for w in request.lin]
    rows = []
    for layer in range(layers):
        maps = [feats[k][layer] for k in range(count)]
        c, h, w = maps[0].shape[1:]
        ptrs = [m.data_ptr() for m in maps] + [0] * (3 - count)
        strides = [m.stride(0) for m in maps] + [0] * (3 - count)
        rows.append((*ptrs, *strides, c, h * w, 0 if lin is None else lin[layer].data_ptr(), False))
    mask = sum(1 << DISTANCES_ORDER.index(d) for d in request.distances)
    out = torch.full((len(DISTANCES_ORDER), count - 1, n, layers), float("nan"), dtype=torch.float32, device=device)
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        ext.fused_distance_cuda(rows, n, count, mask, _ELEMENT[feats[0][0].dtype], out.data_ptr(), stream)
    return [{d: out[DISTANCES_ORDER.index(d), q] for d in request.distances} for q in range(count - 1)]


class CudaBackend(Backend):
    name = "cuda"

    def unsupported(self, request: DistanceRequest) -> List[str]:
        reasons = []
        ext = load_extension()
        if isinstance(ext, ImportError):
            reasons.append(f"the compiled extension perceptual_fast._C is not importable ({ext})")
        elif not getattr(ext, "has_cuda", False):
            reasons.append("perceptual_fast._C was built without CUDA (PERCEPTUAL_FAST_CUDA=OFF or no nvcc at build time)")
        if any(t.device.type != "cuda" for t in request.tensors):
            reasons.append("it runs on CUDA tensors only")
        return reasons + dtype_and_grad_reasons(request, _ELEMENT)

    def compute(self, request: DistanceRequest) -> List[Terms]:
        return fused_distance_cuda(request)
