"""``conv2d_relu``: a convolution followed by ReLU, with the ReLU fused into the convolution for inference.

torch runs ``relu_(conv2d(x))`` as two passes over the output; an LPIPS trunk does that 5-25 times
per image (squeezenet1_1's Fire modules: 25 convolutions, ~5% of its time in the ReLU passes).
Backend ``onednn``: oneDNN's convolution with a ReLU post-op (``torch.ops.mkldnn._convolution_pointwise``,
the op torch's own compiler emits for this pattern on CPU), which applies the ReLU while the output
is still in registers. It is the same convolution primitive torch's eager CPU ``conv2d`` runs, so
the values are equal bit for bit where torch uses oneDNN (float32, the trunks' shapes;
tests/ops/conv2d_relu). The reference ``conv2d_relu_reference`` runs everything else: autograd,
tracing, autocast, non-float32 dtypes, other devices, torch builds without oneDNN.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ..inference import inference_reasons


def conv2d_relu_reference(x: Tensor, conv: torch.nn.Conv2d) -> Tensor:
    """``relu(conv(x))`` by torch's ops: ``[N, C_in, H, W]`` -> ``[N, C_out, H_out, W_out]``, the ReLU in place."""
    return torch.relu_(conv(x))


def onednn_missing() -> Optional[str]:
    """Why this torch cannot fuse at all (None: it can; ``perceptual-fast info`` reports it)."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return "torch has no oneDNN (mkldnn) backend, or it is disabled"
    if not hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
        return "this torch build has no mkldnn._convolution_pointwise op"
    return None


def onednn_reasons(x: Tensor, weight: Tensor, bias: Optional[Tensor], padding) -> List[str]:
    """Why oneDNN's fused convolution cannot run this layer (empty list: it can)."""
    tensors = (x, weight) if bias is None else (x, weight, bias)
    reasons = inference_reasons("conv2d_relu", *tensors)
    if any(t.dtype != torch.float32 for t in tensors):
        reasons.append("it runs float32 tensors only (bf16 trunks run torch's ops, as autocast casts them)")
    if torch.is_autocast_enabled("cpu"):
        reasons.append("CPU autocast is on (torch's conv2d casts under it; the fused op would not)")
    missing = onednn_missing()
    if missing:
        reasons.append(missing)
    if isinstance(padding, str):
        reasons.append(f"padding={padding!r} is a string (numbers only)")
    return reasons


def conv2d_relu(x: Tensor, conv: torch.nn.Conv2d) -> Tensor:
    """``relu(conv(x))`` for ``x`` ``[N, C_in, H, W]`` -> ``[N, C_out, H_out, W_out]``: oneDNN's fused
    convolution where ``onednn_reasons`` is empty (a new tensor in ``x``'s layout), else the reference."""
    if conv.padding_mode != "zeros" or onednn_reasons(x, conv.weight, conv.bias, conv.padding):
        return conv2d_relu_reference(x, conv)
    return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                                                   conv.groups, "relu", [], "")
