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

import dataclasses
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from .backend import Backend, DistanceRequest, Terms
from .extension import KernelCall, extension_kernel_reasons, load_extension
from .reference import DISTANCES, style_term

_ELEMENT = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
_GRAD_DTYPES = (torch.float32,)
KERNEL_BACKWARD = ("lpips", "spatial", "meanpool")
"""The distances whose gradient the backward kernel computes (style: autograd of the reference)."""


def _extension():
    ext = load_extension()
    if isinstance(ext, ImportError):
        raise ext
    return ext


def fused_distance_cpp(request: DistanceRequest) -> List[Terms]:
    """Runs ``request`` on the CPU kernel: one ``{name: [N, L]}`` float32 per comparison."""
    call = KernelCall.prepare(request, _ELEMENT, channels_last_ok=True)
    _extension().fused_distance_cpu(call.rows, call.batch, call.count, call.mask, call.element, call.out.data_ptr())
    return call.results(request.distances)


def gradient_buffer(shape: torch.Size, memory_format: torch.memory_format) -> Tensor:
    """A float32 buffer for one map's gradient; the backward kernel writes every element (its tests
    replace this with a NaN-filled buffer, so an element it fails to write cannot pass)."""
    return torch.empty(shape, dtype=torch.float32, memory_format=memory_format)


Grads = List[List[Optional[Tensor]]]
"""Per list, per layer: a map's gradient, or None where it needs none."""


def _kernel_grads(request: DistanceRequest, grad_terms: List[Terms], needs: Sequence[Sequence[bool]]) -> Grads:
    """The backward kernel's gradients (lpips, spatial, meanpool of ``request``), float32."""
    call = KernelCall.prepare(request, _ELEMENT, channels_last_ok=True)
    call.out.zero_()  # the upstream gradient, in the kernel's [4, count - 1, N, L] slot order
    for q, terms in enumerate(grad_terms):
        for d in request.distances:
            call.out[DISTANCES.index(d), q] = terms[d]
    grads: Grads = [[None] * len(request.feats[0]) for _ in request.feats]
    rows = []
    for layer, row in enumerate(call.rows):
        channels_last = row[-1]
        ptrs, strides = [0, 0, 0], [0, 0, 0]
        for k, maps in enumerate(request.feats):
            if not needs[k][layer]:
                continue
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            g = gradient_buffer(maps[layer].shape, fmt)
            grads[k][layer] = g
            ptrs[k], strides[k] = g.data_ptr(), g.stride(0)
        rows.append((*ptrs, *strides))
    _extension().fused_distance_backward_cpu(call.rows, call.batch, call.count, call.mask, call.element,
                                             call.out.data_ptr(), rows)
    return grads


def _style_grads(request: DistanceRequest, grad_terms: List[Terms], needs: Sequence[Sequence[bool]]) -> Grads:
    """Style's gradient: autograd of the reference's style term, recomputed here."""
    grads: Grads = [[None] * len(request.feats[0]) for _ in request.feats]
    for layer in range(len(request.feats[0])):
        inputs = [lst[layer].detach().requires_grad_(needs[k][layer]) for k, lst in enumerate(request.feats)]
        wanted = [x for x in inputs if x.requires_grad]
        if not wanted:
            continue
        with torch.enable_grad():
            total = sum((style_term(inputs[0], other) * grad_terms[q]["style"][:, layer]).sum()
                        for q, other in enumerate(inputs[1:]))
            found = iter(torch.autograd.grad(total, wanted))
        for k, x in enumerate(inputs):
            if x.requires_grad:
                grads[k][layer] = next(found)
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
        parts = []
        kernel = tuple(d for d in request.distances if d in KERNEL_BACKWARD)
        if kernel:
            parts.append(_kernel_grads(dataclasses.replace(request, distances=kernel), grad_terms, needs))
        if "style" in request.distances:
            parts.append(_style_grads(request, grad_terms, needs))
        out: Grads = [[None] * len(request.feats[0]) for _ in request.feats]
        for k, per_list in enumerate(request.feats):
            for layer, t in enumerate(per_list):
                found = [p[k][layer] for p in parts if p[k][layer] is not None]
                out[k][layer] = None if not found else sum(found[1:], found[0]).to(t.dtype)
        return out
