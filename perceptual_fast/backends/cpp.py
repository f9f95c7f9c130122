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
from torch import Tensor

from ..distances import DISTANCES
from .base import Backend, DistanceRequest, Terms
from .common import dtype_and_grad_reasons

_ELEMENT = {torch.float32: "float32", torch.bfloat16: "bfloat16"}

# Slot order of the kernel's output (kernels/cpu/fused_distance.h, enum Distance).
DISTANCES_ORDER = ("spatial", "lpips", "meanpool", "style")
assert set(DISTANCES_ORDER) == set(DISTANCES)


def load_extension():
    """The compiled ``_C`` module, or the ImportError that says why it is missing."""
    try:
        from .. import _C

        return _C
    except ImportError as err:
        return err


def _is_nchw(t: Tensor) -> bool:
    """Samples NCHW-contiguous (channel stride H*W, position stride 1), any batch stride."""
    c, h, w = t.shape[1:]
    return t.stride()[1:] == (h * w, w, 1)


def _is_channels_last(t: Tensor) -> bool:
    """Samples NHWC-contiguous (channel stride 1, position stride C), any batch stride."""
    c, h, w = t.shape[1:]
    return t.stride()[1:] == (1, w * c, c)


def _nchw(t: Tensor) -> Tensor:
    """A view whose samples are NCHW-contiguous, copying only when needed."""
    return t if _is_nchw(t) else t.contiguous()


def _layer_layout(maps: List[Tensor]) -> tuple:
    """The maps of one layer and whether they are channels_last: read as they are when all are
    NCHW or all are channels_last (what a trunk gives in either memory format), else copied to NCHW."""
    if all(_is_nchw(m) for m in maps):
        return maps, False
    if all(_is_channels_last(m) for m in maps):
        return maps, True
    return [_nchw(m) for m in maps], False


def fused_distance_cpp(request: DistanceRequest) -> List[Terms]:
    """Runs ``request`` on the CPU kernel: one ``{name: [N, L]}`` float32 per comparison."""
    ext = load_extension()
    if isinstance(ext, ImportError):
        raise ext
    feats = [[t.detach() for t in layer_list] for layer_list in request.feats]
    count, n, layers = len(feats), feats[0][0].shape[0], len(feats[0])
    lin = None
    if "lpips" in request.distances:
        lin = [w.detach().to(device="cpu", dtype=torch.float32).contiguous() for w in request.lin]
    # `layouts` holds any copies _layer_layout makes until the kernel has read them.
    layouts = [_layer_layout([feats[k][layer] for k in range(count)]) for layer in range(layers)]
    rows = []
    for layer, (maps, channels_last) in enumerate(layouts):
        c, h, w = maps[0].shape[1:]
        ptrs = [m.data_ptr() for m in maps] + [0] * (3 - count)
        strides = [m.stride(0) for m in maps] + [0] * (3 - count)
        rows.append((*ptrs, *strides, c, h * w, 0 if lin is None else lin[layer].data_ptr(), channels_last))
    mask = sum(1 << DISTANCES_ORDER.index(d) for d in request.distances)
    # NaN-filled, so any element the kernel fails to write cannot pass for a result.
    out = torch.full((len(DISTANCES_ORDER), count - 1, n, layers), float("nan"), dtype=torch.float32)
    ext.fused_distance_cpu(rows, n, count, mask, _ELEMENT[feats[0][0].dtype], out.data_ptr())
    return [{d: out[DISTANCES_ORDER.index(d), q] for d in request.distances} for q in range(count - 1)]


class CppBackend(Backend):
    name = "cpp"

    def unsupported(self, request: DistanceRequest) -> List[str]:
        reasons = []
        ext = load_extension()
        if isinstance(ext, ImportError):
            reasons.append(f"the compiled extension perceptual_fast._C is not importable ({ext})")
        if any(t.device.type != "cpu" for t in request.tensors):
            reasons.append("it runs on CPU tensors only")
        return reasons + dtype_and_grad_reasons(request, _ELEMENT)

    def compute(self, request: DistanceRequest) -> List[Terms]:
        return fused_distance_cpp(request)
