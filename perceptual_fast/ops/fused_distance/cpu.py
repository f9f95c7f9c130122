"""The ``cpp`` backend: the fused OpenMP + SIMD CPU kernels of perceptual_fast._C, forward and backward.

kernels/cpu/fused_distance.h computes every requested distance of every layer in one call,
reading each feature element from memory once and the reference once for a triplet. It takes
float32 or bfloat16 CPU maps (float32 accumulation, float32 results) whose samples are NCHW- or
channels_last-contiguous (what a trunk gives in either memory format); other layouts are copied
to NCHW first.

Backward: kernels/cpu/fused_distance_backward.h gives the gradients of lpips, spatial and meanpool
from the maps alone (float32 maps: under autocast the Scorer widens 16-bit taps before a
differentiable head). Style's gradient goes through autograd of the reference's style term,
recomputed in the backward (its Gram matrices are what that gradient needs).
"""

from __future__ import annotations

from typing import List, Sequence

import torch

from . import autograd
from .autograd import Grads
from .backend import Backend, DistanceRequest, Terms
from .extension import KernelCall, extension_kernel_reasons, load_extension

_ELEMENT = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
_GRAD_DTYPES = (torch.float32,)


def _extension():
    ext = load_extension()
    if isinstance(ext, ImportError):
        raise ext
    return ext


def fused_distance_cpp(request: DistanceRequest) -> List[Terms]:
    """Runs ``request`` on the CPU kernel: one ``{name: [N, L]}`` float32 per comparison."""
    call = KernelCall.prepare(request, _ELEMENT, channels_last_ok=True)
    _extension().fused_distance_cpu(call.rows, call.batch, call.count, call.mask, call.element, call.out.data_ptr(),
                                    torch.get_num_threads())  # torch's thread count, so torch.set_num_threads rules both
    return call.results(request.distances)


def _kernel_grads(request: DistanceRequest, grad_terms: List[Terms], needs: Sequence[Sequence[bool]]) -> Grads:
    """The backward kernel's gradients (of ``request``'s lpips, spatial and meanpool), float32."""
    call, rows, grads = KernelCall.prepare_backward(request, _ELEMENT, True, grad_terms, needs)
    _extension().fused_distance_backward_cpu(call.rows, call.batch, call.count, call.mask, call.element,
                                             call.out.data_ptr(), rows, torch.get_num_threads())
    return grads


class CppBackend(Backend):
    name = "cpp"
    has_backward = True

    def unsupported(self, request: DistanceRequest) -> List[str]:
        return extension_kernel_reasons(request, "cpu", _ELEMENT, grad_dtypes=_GRAD_DTYPES)

    def compute(self, request: DistanceRequest) -> List[Terms]:
        return fused_distance_cpp(request)

    def backward(self, request: DistanceRequest, grad_terms: List[Terms],
                 needs: Sequence[Sequence[bool]]) -> Grads:
        return autograd.kernel_and_reference_grads(request, grad_terms, needs, _kernel_grads)
