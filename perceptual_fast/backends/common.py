"""Checks shared by the kernel backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, List, Mapping, Sequence

import torch
from torch import Tensor

from ..distances import DISTANCES
from .base import DistanceRequest, Terms

# Slot order of the kernels' output (kernels/cpu/fused_distance.h and kernels/cuda: enum Distance/Slot).
DISTANCES_ORDER = ("spatial", "lpips", "meanpool", "style")
assert set(DISTANCES_ORDER) == set(DISTANCES)


def load_extension():
    """The compiled ``_C`` module, or the ImportError that says why it is missing."""
    try:
        from .. import _C

        return _C
    except ImportError as err:
        return err


def extension_kernel_reasons(
    request: DistanceRequest, device_type: str, dtypes: Collection[torch.dtype], needs_cuda_build: bool = False
) -> List[str]:
    """Why a ``_C`` kernel for ``device_type`` tensors cannot run ``request`` (empty: it can)."""
    reasons = []
    ext = load_extension()
    if isinstance(ext, ImportError):
        reasons.append(f"the compiled extension perceptual_fast._C is not importable ({ext})")
    elif needs_cuda_build and not getattr(ext, "has_cuda", False):
        reasons.append("perceptual_fast._C was built without CUDA (PERCEPTUAL_FAST_CUDA=OFF or no nvcc at build time)")
    if any(t.device.type != device_type for t in request.tensors):
        reasons.append(f"it runs on {device_type.upper()} tensors only")
    return reasons + one_device_reasons(request) + dtype_and_grad_reasons(request, dtypes)


def one_device_reasons(request: DistanceRequest) -> List[str]:
    """A kernel reads every map through pointers of one device: ``cuda:0`` and ``cuda:1`` do not mix."""
    devices = {t.device for t in request.tensors}
    return [] if len(devices) == 1 else [f"all features must be on one device, got {sorted(map(str, devices))}"]


def dtype_and_grad_reasons(request: DistanceRequest, dtypes: Collection[torch.dtype]) -> List[str]:
    """Reasons a kernel without backward that takes one dtype among ``dtypes`` cannot run ``request``."""
    reasons = []
    seen = {t.dtype for t in request.tensors}
    if len(seen) != 1 or not seen <= set(dtypes):
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        reasons.append(f"it takes features of one dtype among {names}, got {sorted(map(str, seen))}")
    if request.needs_grad:
        reasons.append("it has no backward and gradients are needed")
    return reasons


def _sample_strides_are(t: Tensor, strides: tuple) -> bool:
    """The C, H, W strides of ``t`` are ``strides`` wherever the size is > 1 (the stride of a size-1
    dimension is never used to address an element, and torch leaves it arbitrary: a channels_last
    ``[N, C, 1, 1]`` map or a ``C = 1`` map is laid out like an NCHW one)."""
    return all(size == 1 or have == want for size, have, want in zip(t.shape[1:], t.stride()[1:], strides))


def _isnchw(t: Tensor) -> bool:
    """Samples NCHW-contiguous (channel stride H*W, position stride 1), any batch stride."""
    c, h, w = t.shape[1:]
    return _sample_strides_are(t, (h * w, w, 1))


def _is_channels_last(t: Tensor) -> bool:
    """Samples NHWC-contiguous (channel stride 1, position stride C), any batch stride."""
    c, h, w = t.shape[1:]
    return _sample_strides_are(t, (1, w * c, c))


def nchw(t: Tensor) -> Tensor:
    """A view whose samples are NCHW-contiguous, copying only when needed."""
    return t if _isnchw(t) else t.contiguous()


def _layer_layout(maps: List[Tensor]) -> tuple:
    """The maps of one layer and whether they are channels_last: read as they are when all are
    NCHW or all are channels_last (what a trunk gives in either memory format), else copied to NCHW."""
    if all(_isnchw(m) for m in maps):
        return maps, False
    if all(_is_channels_last(m) for m in maps):
        return maps, True
    return [nchw(m) for m in maps], False


@dataclass
class KernelCall:
    """The arguments of one ``_C.fused_distance_*`` call, built from a request.

    rows: per layer ``(a, b, c, stride_a, stride_b, stride_c, C, HW, lin, channels_last)`` with
    data pointers (see csrc/bindings.cpp). out: float32 ``[4, count - 1, N, L]`` filled with NaN,
    so an element the kernel fails to write cannot pass for a result. keep: the tensors the
    pointers point into (layout copies, lin weights), alive until the call returns.
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
        lin = None
        if "lpips" in request.distances:
            lin = [w.detach().to(device=device, dtype=torch.float32).contiguous() for w in request.lin]
        layouts = []
        for layer in range(layers):
            maps = [feats[k][layer] for k in range(count)]
            layouts.append(_layer_layout(maps) if channels_last_ok else ([nchw(m) for m in maps], False))
        rows = []
        for layer, (maps, channels_last) in enumerate(layouts):
            c, h, w = maps[0].shape[1:]
            ptrs = [m.data_ptr() for m in maps] + [0] * (3 - count)
            strides = [m.stride(0) for m in maps] + [0] * (3 - count)
            rows.append((*ptrs, *strides, c, h * w, 0 if lin is None else lin[layer].data_ptr(), channels_last))
        mask = sum(1 << DISTANCES_ORDER.index(d) for d in request.distances)
        out = torch.full((len(DISTANCES_ORDER), count - 1, batch, layers), float("nan"), dtype=torch.float32, device=device)
        return KernelCall(rows, batch, count, mask, elements[feats[0][0].dtype], out, [layouts, lin])

    def results(self, distances: Sequence[str]) -> List[Terms]:
        """One ``{name: [N, L]}`` per comparison, views of ``out``."""
        return [{d: self.out[DISTANCES_ORDER.index(d), q] for d in distances} for q in range(self.count - 1)]
