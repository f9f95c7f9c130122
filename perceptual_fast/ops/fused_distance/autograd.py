"""The fused op under autograd: a backend's kernel forward with the backend's own backward.

``differentiable_compute(backend, request)`` returns what ``backend.compute(request)`` returns, with
a ``grad_fn`` whose backward is ``backend.backward``: the forward saves the feature maps (which the
trunk's autograd graph keeps alive anyway) and nothing else; the backward recomputes what it needs
from them. It is differentiable once: ``create_graph=True`` through it raises an error that names the
``torch`` backend, the differentiable reference, for second derivatives.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .backend import Backend, DistanceRequest, Terms
from .reference import layer_term


def _regroup(flat: Sequence, lists: int) -> Tuple[tuple, ...]:
    """``lists * L`` items -> ``lists`` tuples of L (the request's ``feats`` order)."""
    per = len(flat) // lists
    return tuple(tuple(flat[i * per : (i + 1) * per]) for i in range(lists))


class FusedDistanceFunction(torch.autograd.Function):
    """forward(backend, request, lists, *maps) -> float32 ``[lists - 1, D, N, L]`` (comparison, distance
    in ``request.distances`` order, sample, layer); ``maps``: the ``lists`` lists of the request's
    feature maps, flattened (``request.feats`` itself is not read: autograd must see the maps)."""

    @staticmethod
    def forward(ctx, backend: Backend, request: DistanceRequest, lists: int, *maps: Tensor) -> Tensor:
        request = dataclasses.replace(request, feats=_regroup(maps, lists))
        terms = backend.compute(request)
        ctx.backend, ctx.request = backend, request
        ctx.save_for_backward(*maps)
        return torch.stack([torch.stack([t[d] for d in request.distances]) for t in terms])

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative was asked for
            raise RuntimeError(f"the {ctx.backend.name} backend's backward is differentiable once; for second "
                               "derivatives (create_graph=True) pass backend='torch' (the differentiable reference)")
        lists = len(ctx.request.feats)
        request = dataclasses.replace(ctx.request, feats=_regroup(ctx.saved_tensors, lists))
        grad_terms = [{d: grad[q, i] for i, d in enumerate(request.distances)} for q in range(grad.shape[0])]
        needs = _regroup(ctx.needs_input_grad[3:], lists)
        grads = ctx.backend.backward(request, grad_terms, needs)
        return (None, None, None, *(g for per_list in grads for g in per_list))


Grads = List[List[Optional[Tensor]]]
"""Per list, per layer: a map's gradient, or None where it needs none (what ``Backend.backward`` returns)."""


def gradient_buffer(shape: Sequence[int], device: torch.device,
                    memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """A float32 buffer for gradients that a backward kernel writes completely (the backward tests
    replace this with a NaN-filled one, so an element a kernel fails to write cannot pass)."""
    return torch.empty(tuple(shape), dtype=torch.float32, device=device, memory_format=memory_format)


def reference_grads(request: DistanceRequest, grad_terms: List[Terms], needs: Sequence[Sequence[bool]]) -> Grads:
    """The gradients of the ``REFERENCE_BACKWARD`` distances of ``request`` for the kernels' backends:
    autograd of the reference's layer terms, recomputed here (style needs its Gram matrices for its
    gradient; dists's per-channel moments are cheap to recompute)."""
    grads: Grads = [[None] * len(request.feats[0]) for _ in request.feats]
    names = [d for d in request.distances if d in REFERENCE_BACKWARD]
    weights = {"dists": request.dists_weights}
    for layer in range(len(request.feats[0])):
        inputs = [lst[layer].detach().requires_grad_(needs[k][layer]) for k, lst in enumerate(request.feats)]
        wanted = [x for x in inputs if x.requires_grad]
        if not wanted:
            continue
        with torch.enable_grad():
            total = sum((layer_term(d, inputs[0], other, weights[d][layer].detach() if d in weights else None)
                         * grad_terms[q][d][:, layer]).sum()
                        for q, other in enumerate(inputs[1:]) for d in names)
            found = iter(torch.autograd.grad(total, wanted))
        for k, x in enumerate(inputs):
            if x.requires_grad:
                grads[k][layer] = next(found)
    return grads


def summed_grads(request: DistanceRequest, parts: Sequence[Grads]) -> Grads:
    """The sum of the ``parts`` (a kernel's, style's) per map, in each map's dtype; None where none has one."""
    out: Grads = [[None] * len(request.feats[0]) for _ in request.feats]
    for k, per_list in enumerate(request.feats):
        for layer, t in enumerate(per_list):
            found = [p[k][layer] for p in parts if p[k][layer] is not None]
            out[k][layer] = None if not found else sum(found[1:], found[0]).to(t.dtype)
    return out


KERNEL_BACKWARD = ("lpips", "spatial", "meanpool")
"""The distances whose gradient the backward kernels compute."""
REFERENCE_BACKWARD = ("style", "dists")
"""The distances whose gradient a kernel backend takes from the reference (``reference_grads``)."""

KernelGrads = Callable[[DistanceRequest, List[Terms], Sequence[Sequence[bool]]], Grads]


def kernel_and_reference_grads(request: DistanceRequest, grad_terms: List[Terms], needs: Sequence[Sequence[bool]],
                           kernel_grads: KernelGrads) -> Grads:
    """A kernel backend's ``backward``: ``kernel_grads`` on the request restricted to ``KERNEL_BACKWARD``,
    plus ``reference_grads`` when style or dists is requested, summed per map."""
    parts = []
    kernel = tuple(d for d in request.distances if d in KERNEL_BACKWARD)
    if kernel:
        parts.append(kernel_grads(dataclasses.replace(request, distances=kernel), grad_terms, needs))
    if any(d in REFERENCE_BACKWARD for d in request.distances):
        parts.append(reference_grads(request, grad_terms, needs))
    return summed_grads(request, parts)


def differentiable_compute(backend: Backend, request: DistanceRequest) -> List[Terms]:
    """``backend.compute(request)`` as views of one output with the backend's backward attached."""
    maps = [t for per_list in request.feats for t in per_list]
    out = FusedDistanceFunction.apply(backend, dataclasses.replace(request, feats=()), len(request.feats), *maps)
    return [{d: out[q, i] for i, d in enumerate(request.distances)} for q in range(out.shape[0])]


__all__ = ["KERNEL_BACKWARD", "REFERENCE_BACKWARD", "FusedDistanceFunction", "Grads", "differentiable_compute", "gradient_buffer",
           "kernel_and_reference_grads", "reference_grads", "summed_grads"]
