"""The fused op under autograd: a backend's kernel forward with the backend's own backward.

``differentiable_compute(backend, request)`` returns what ``backend.compute(request)`` returns, with
a ``grad_fn`` whose backward is ``backend.backward``: the forward saves the feature maps (which the
trunk's autograd graph keeps alive anyway) and nothing else; the backward recomputes what it needs
from them. It is differentiable once: ``create_graph=True`` through it raises an error that names the
``torch`` backend, the differentiable reference, for second derivatives.
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from .backend import Backend, DistanceRequest, Terms


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


def differentiable_compute(backend: Backend, request: DistanceRequest) -> List[Terms]:
    """``backend.compute(request)`` as views of one output with the backend's backward attached."""
    maps = [t for per_list in request.feats for t in per_list]
    out = FusedDistanceFunction.apply(backend, dataclasses.replace(request, feats=()), len(request.feats), *maps)
    return [{d: out[q, i] for i, d in enumerate(request.distances)} for q in range(out.shape[0])]


__all__ = ["FusedDistanceFunction", "differentiable_compute"]
