"""The call into the compiled extension ``perceptual_fast._C`` shared by the ``cpp`` (cpu.py) and
``cuda`` (cuda.py) backends: whether it can run a request, and the marshalling of a request into
raw pointers, strides and a NaN-poisoned output (csrc/bindings.cpp takes them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, List, Mapping, Optional, Sequence

import torch
from torch import Tensor

from . import autograd
from .backend import DistanceRequest, Terms, dtype_and_grad_reasons, is_channels_last, is_nchw, nchw, one_device_reasons
from .reference import DISTANCES


def load_extension():
    """The compiled ``_C`` module, or the ImportError that says why it is missing."""
    try:
        from ... import _C

        return _C
    except ImportError as err:
        return err


def extension_kernel_reasons(
    request: DistanceRequest, device_type: str, dtypes: Collection[torch.dtype], needs_cuda_build: bool = False,
    grad_dtypes: Collection[torch.dtype] = (),
) -> List[str]:
    """Why a ``_C`` kernel for ``device_type`` tensors cannot run ``request`` (empty: it can);
    ``grad_dtypes``: the map dtypes its backward takes (none: it has no backward)."""
    reasons = []
    ext = load_extension()
    if isinstance(ext, ImportError):
        reasons.append(f"the compiled extension perceptual_fast._C is not importable ({ext})")
    elif needs_cuda_build and not getattr(ext, "has_cuda", False):
        reasons.append("perceptual_fast._C was built without CUDA (PERCEPTUAL_FAST_CUDA=OFF or no nvcc at build time)")
    if any(t.device.type != device_type for t in request.tensors):
        reasons.append(f"it runs on {device_type.upper()} tensors only")
    return reasons + one_device_reasons(request) + dtype_and_grad_reasons(request, dtypes, bool(grad_dtypes), grad_dtypes)


def _layer_layout(maps: List[Tensor]) -> tuple:
    """The maps of one layer and whether they are channels_last: read as they are when all are
    NCHW or all are channels_last (what a trunk gives in either memory format), else copied to NCHW."""
    if all(is_nchw(m) for m in maps):
        return maps, False
    if all(is_channels_last(m) for m in maps):
        return maps, True
    return [nchw(m) for m in maps], False


@dataclass
class KernelCall:
    """The arguments of one ``_C.fused_distance_*`` call, built from a request.

    rows: per layer ``(a, b, c, stride_a, stride_b, stride_c, C, HW, lin, dists, channels_last)`` with
    data pointers (see csrc/bindings.cpp). out: float32 ``[5, count - 1, N, L]`` filled with NaN,
    so an element the kernel fails to write cannot pass for a result. keep: the tensors the
    pointers point into (layout copies, lin and dists weights), alive until the call returns.
    """

    rows: list
    batch: int
    count: int
    mask: int
    element: str
    out: Tensor
    keep: list

    @staticmethod
    def prepare(request: DistanceRequest, elements: Mapping[torch.dtype, str], channels_last_ok: bool) -> "KernelCall":
        feats = [[t.detach() for t in lst] for lst in request.feats]
        count, batch, layers = len(feats), feats[0][0].shape[0], len(feats[0])
        device = feats[0][0].device
        lin = dists = None
        if "lpips" in request.distances:
            lin = [w.detach().to(device=device, dtype=torch.float32).contiguous() for w in request.lin]
        if "dists" in request.distances:
            dists = [w.detach().to(device=device, dtype=torch.float32).contiguous() for w in request.dists_weights]
        layouts = []
        for layer in range(layers):
            maps = [feats[k][layer] for k in range(count)]
            layouts.append(_layer_layout(maps) if channels_last_ok else ([nchw(m) for m in maps], False))
        rows = []
        for layer, (maps, channels_last) in enumerate(layouts):
            c, h, w = maps[0].shape[1:]
            ptrs = [m.data_ptr() for m in maps] + [0] * (3 - count)
            strides = [m.stride(0) for m in maps] + [0] * (3 - count)
            rows.append((*ptrs, *strides, c, h * w, 0 if lin is None else lin[layer].data_ptr(),
                         0 if dists is None else dists[layer].data_ptr(), channels_last))
        mask = sum(1 << DISTANCES.index(d) for d in request.distances)
        out = torch.full((len(DISTANCES), count - 1, batch, layers), float("nan"), dtype=torch.float32, device=device)
        return KernelCall(rows, batch, count, mask, elements[feats[0][0].dtype], out, [layouts, lin, dists])

    @staticmethod
    def prepare_backward(request: DistanceRequest, elements: Mapping[torch.dtype, str], channels_last_ok: bool,
                         grad_terms: List[Terms], needs: Sequence[Sequence[bool]]) -> tuple:
        """The arguments of a ``_C.fused_distance_backward_*`` call: ``(call, grad_rows, grads)``. ``call.out``
        holds the upstream gradient ``grad_terms`` in the kernels' ``[5, count - 1, N, L]`` slot order;
        ``grad_rows`` per layer ``(g0, g1, g2, stride0, stride1, stride2)``; ``grads`` ``[list][layer]``:
        float32 buffers in the layout the kernel reads that layer in, None where ``needs`` is False."""
        call = KernelCall.prepare(request, elements, channels_last_ok)
        call.out.zero_()
        for q, terms in enumerate(grad_terms):
            for d in request.distances:
                call.out[DISTANCES.index(d), q] = terms[d]
        grads: List[List[Optional[Tensor]]] = [[None] * len(request.feats[0]) for _ in request.feats]
        rows = []
        for layer, row in enumerate(call.rows):
            fmt = torch.channels_last if row[-1] else torch.contiguous_format
            ptrs, strides = [0, 0, 0], [0, 0, 0]
            for k, maps in enumerate(request.feats):
                if needs[k][layer]:
                    # looked up per call: the backward tests replace it with a NaN-filled buffer
                    g = autograd.gradient_buffer(maps[layer].shape, maps[layer].device, fmt)
                    grads[k][layer] = g
                    ptrs[k], strides[k] = g.data_ptr(), g.stride(0)
            rows.append((*ptrs, *strides))
        return call, rows, grads

    def results(self, distances: Sequence[str]) -> List[Terms]:
        """One ``{name: [N, L]}`` per comparison, views of ``out``."""
        return [{d: self.out[DISTANCES.index(d), q] for d in distances} for q in range(self.count - 1)]
