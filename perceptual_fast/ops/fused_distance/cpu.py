"""The ``cpp`` backend: the fused OpenMP + SIMD CPU kernel of perceptual_fast._C.

kernels/cpu/fused_distance.h computes every requested distance of every layer in one call,
reading each feature element from memory once and the reference once for a triplet. It takes
float32 or bfloat16 CPU maps (float32 accumulation, float32 results) whose samples are NCHW- or
channels_last-contiguous (what a trunk gives in either memory format); other layouts are copied
to NCHW first. It has no backward: when gradients are needed the dispatcher uses the ``torch``
backend instead.
"""

from __future__ import annotations

from typing import List

import torch

from .backend import Backend, DistanceRequest, Terms
from .extension import KernelCall, extension_kernel_reasons, load_extension

_ELEMENT = {torch.float32: "float32", torch.bfloat16: "bfloat16"}


def fused_distance_cpp(request: DistanceRequest) -> List[Terms]:
    """Runs ``request`` on the CPU kernel: one ``{name: [N, L]}`` float32 per comparison."""
    ext = load_extension()
    if isinstance(ext, ImportError):
        raise ext
    call = KernelCall.prepare(request, _ELEMENT, channels_last_ok=True)
    ext.fused_distance_cpu(call.rows, call.batch, call.count, call.mask, call.element, call.out.data_ptr())
    return call.results(request.distances)


class CppBackend(Backend):
    name = "cpp"

    def unsupported(self, request: DistanceRequest) -> List[str]:
        return extension_kernel_reasons(request, "cpu", _ELEMENT)

    def compute(self, request: DistanceRequest) -> List[Terms]:
        return fused_distance_cpp(request)
