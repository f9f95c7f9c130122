"""The ``cpp`` backend: OpenMP + SIMD CPU kernels from the ``perceptual_fast._C`` extension.

Implemented so far: the ``spatial`` and ``lpips`` terms (kernels/cpu/spatial_term.h) for float32
CPU tensors in NCHW or channels_last layout. It has no backward: when gradients are needed the
dispatcher uses the ``torch`` backend instead.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor

from .base import Backend, DistanceRequest

SUPPORTED = ("spatial", "lpips")


def load_extension():
    """The compiled ``_C`` module, or the ImportError that says why it is missing."""
    try:
        from .. import _C

        return _C
    except ImportError as err:
        return err


def _same_layout(y0: Tensor, y1: Tensor) -> tuple:
    """Both maps in one layout the kernel reads without copies when possible: NCHW or channels_last."""
    if y0.is_contiguous() and y1.is_contiguous():
        return y0, y1
    if y0.is_contiguous(memory_format=torch.channels_last) and y1.is_contiguous(memory_format=torch.channels_last):
        return y0, y1
    return y0.contiguous(), y1.contiguous()


def spatial_term_cpp(y0: Tensor, y1: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """``mean_hw sum_c w_c (ŷ0 - ŷ1)^2`` on the CPU kernel.

    y0, y1: ``[N, C, H, W]`` float32 CPU tensors, NCHW or channels_last (others are copied).
    weight: ``[C]`` or None. Returns ``[N]`` float32.
    """
    ext = load_extension()
    if isinstance(ext, ImportError):
        raise ext
    if y0.shape != y1.shape or y0.dim() != 4:
        raise ValueError(f"need two [N, C, H, W] maps of one shape; got {tuple(y0.shape)} and {tuple(y1.shape)}")
    if y0.dtype != torch.float32 or y1.dtype != torch.float32 or y0.device.type != "cpu" or y1.device.type != "cpu":
        raise ValueError("the cpp kernel takes float32 CPU tensors")
    n, c, h, w = y0.shape
    y0, y1 = _same_layout(y0.detach(), y1.detach())
    planar = y0.is_contiguous() and y1.is_contiguous()
    if weight is not None:
        weight = weight.detach().to(device="cpu", dtype=torch.float32).contiguous()
        if weight.shape != (c,):
            raise ValueError(f"channel weights must have shape [{c}], got {tuple(weight.shape)}")
    # NaN-filled, so an element the kernel fails to write cannot pass for a result.
    out = torch.full((n,), float("nan"), dtype=torch.float32)
    ext.spatial_term_f32(
        y0.data_ptr(),
        y1.data_ptr(),
        0 if weight is None else weight.data_ptr(),
        out.data_ptr(),
        n,
        c,
        h * w,
        y0.stride(0),
        y1.stride(0),
        y0.stride(1),
        1 if planar else y0.stride(3),
    )
    return out


class CppBackend(Backend):
    name = "cpp"

    def unsupported(self, request: DistanceRequest) -> List[str]:
        reasons = []
        ext = load_extension()
        if isinstance(ext, ImportError):
            reasons.append(f"the compiled extension perceptual_fast._C is not importable ({ext})")
        other = [d for d in request.distances if d not in SUPPORTED]
        if other:
            reasons.append(f"it implements {', '.join(SUPPORTED)} only, not {', '.join(other)}")
        tensors = (*request.feats0, *request.feats1)
        if any(t.device.type != "cpu" for t in tensors):
            reasons.append("it runs on CPU tensors only")
        if any(t.dtype != torch.float32 for t in tensors):
            reasons.append(f"it takes float32 features only, got {sorted({str(t.dtype) for t in tensors})}")
        if request.needs_grad:
            reasons.append("it has no backward and gradients are needed")
        return reasons

    def layer_terms(self, request: DistanceRequest) -> Dict[str, Tensor]:
        out = {}
        for name in request.distances:
            cols = [
                spatial_term_cpp(a, b, request.lin[i] if name == "lpips" else None)
                for i, (a, b) in enumerate(zip(request.feats0, request.feats1))
            ]
            out[name] = torch.stack(cols, dim=1)
        return out
