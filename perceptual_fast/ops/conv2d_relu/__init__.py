"""``conv2d_relu``: a convolution followed by ReLU, with the ReLU fused into the convolution for inference.

torch runs ``relu_(conv2d(x))`` as two passes over the output; an LPIPS trunk does that 5-25 times
per image (squeezenet1_1's Fire modules: 25 convolutions, ~5% of its time in the ReLU passes).
Backend ``onednn``: oneDNN's convolution with a ReLU post-op (``torch.ops.mkldnn._convolution_pointwise``,
the op torch's own compiler emits for this pattern on CPU), which applies the ReLU while the output
is still in registers. It runs on channels_last batches of 2 or more, where torch's float32 CPU
``conv2d`` runs the same oneDNN primitive, so the values are torch's bit for bit (tests/ops/conv2d_relu,
at one thread and at two). On NCHW maps and single images torch may run a kernel of its own
(and for unstrided 1x1 convolutions of fewer than 16 images on one thread), whose values differ in
the last bit; those run the reference.
The reference ``conv2d_relu_reference`` runs everything else: autograd,
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


def onednn_reasons(x: Tensor, conv: torch.nn.Conv2d) -> List[str]:
    """Why oneDNN's fused convolution cannot run ``conv`` on ``x`` (empty list: it can)."""
    tensors = (x, conv.weight) if conv.bias is None else (x, conv.weight, conv.bias)
    reasons = inference_reasons("conv2d_relu", *tensors)
    if reasons:  # before any shape test (torch.export would add a guard; fx proxies have none)
        return reasons
    # Where torch's conv2d may run a kernel of its own instead of oneDNN's, the fused values would
    # differ from its values in the last bit: NCHW maps, single images, and (torch's rule) unstrided
    # 1x1 convolutions of fewer than 16 images on one thread.
    if x.dim() != 4 or x.shape[0] < 2 or not x.is_contiguous(memory_format=torch.channels_last):
        reasons.append("it takes channels_last batches of 2 or more [N, C, H, W] maps (where torch's conv2d runs oneDNN)")
    elif (tuple(conv.kernel_size) == (1, 1) and tuple(conv.stride) == (1, 1) and tuple(conv.dilation) == (1, 1)
          and x.shape[0] < 16 and torch.get_num_threads() == 1):
        reasons.append("torch's conv2d runs its own kernel for an unstrided 1x1 convolution of fewer than 16 images "
                       "on one thread")
    if any(t.dtype != torch.float32 for t in tensors):
        reasons.append("it runs float32 tensors only (bf16 trunks run torch's ops, as autocast casts them)")
    if torch.is_autocast_enabled("cpu"):
        reasons.append("CPU autocast is on (torch's conv2d casts under it; the fused op would not)")
    missing = onednn_missing()
    if missing:
        reasons.append(missing)
    if isinstance(conv.padding, str):
        reasons.append(f"padding={conv.padding!r} is a string (numbers only)")
    if conv.padding_mode != "zeros":
        reasons.append(f"padding_mode={conv.padding_mode!r} (zeros only)")
    return reasons


def conv2d_relu(x: Tensor, conv: torch.nn.Conv2d) -> Tensor:
    """``relu(conv(x))`` for ``x`` ``[N, C_in, H, W]`` -> ``[N, C_out, H_out, W_out]``: oneDNN's fused
    convolution where ``onednn_reasons`` is empty (a new tensor in ``x``'s layout), else the reference."""
    if onednn_reasons(x, conv):
        return conv2d_relu_reference(x, conv)
    return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                                                   conv.groups, "relu", [], "")
