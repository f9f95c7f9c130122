"""The ``cuda`` backend: kernels/cuda device code launched from csrc/ (perceptual_fast._C built with CUDA).

Takes raw device pointers and torch's current CUDA stream; float32, bfloat16 or float16 maps,
float32 accumulation. Available only when the extension was built with PERCEPTUAL_FAST_CUDA.
"""

from __future__ import annotations

from typing import List

import torch

from .base import Backend, DistanceRequest, Terms
from .common import KernelCall, extension_kernel_reasons, load_extension

_ELEMENT = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def fused_distance_cuda(request: DistanceRequest) -> List[Terms]:
    """Runs ``request`` on the CUDA kernels: one ``{name: [N, L]}`` float32 per comparison."""
    ext = load_extension()
    call = KernelCall.prepare(request, _ELEMENT, channels_last_ok=False)  # the CUDA kernels read NCHW
    device = call.out.device
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        ext.fused_distance_cuda(call.rows, call.batch, call.count, call.mask, call.element, call.out.data_ptr(), stream)
    return call.results(request.distances)


class CudaBackend(Backend):
    name = "cuda"

    def unsupported(self, request: DistanceRequest) -> List[str]:
        return extension_kernel_reasons(request, "cuda", _ELEMENT, needs_cuda_build=True)

    def compute(self, request: DistanceRequest) -> List[Terms]:
        return fused_distance_cuda(request)
