"""``max_pool2d``: 2-D max pooling for inference, without torch's argmax indices.

torch's CPU ``max_pool2d`` computes and writes an int64 index per output even under ``no_grad``
(it runs ``max_pool2d_with_indices``): on channels_last maps that is twice the bytes of the output
written, for nothing. Here ``cpp`` (csrc/max_pool2d_cpu.cpp) pools channels_last float32 maps in
one read of the input and one write of the output (squeezenet1_1's three pools of 192 images of
64x64: bench/inference_layers.py). The reference is ``torch.nn.functional.max_pool2d`` itself,
which also runs everything the kernel does not take (other layouts and dtypes, CUDA, autograd,
tracing); the values are equal bit for bit, signed zeros included, and NaN where torch gives NaN
(always the quiet +NaN; torch passes on the input's NaN; tests/ops/max_pool2d).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..fused_distance.extension import load_extension
from ..inference import inference_reasons, plain

Size2 = Union[int, Sequence[int]]


def as_pair(v: Size2) -> Tuple[int, int]:
    """An int or a sequence of one or two ints as (height, width), as torch's convolutions and pools read
    them (also the trunks' shape arithmetic)."""
    if isinstance(v, int):
        return v, v
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def window_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False
                       ) -> int:
    """Output length of a sliding window (convolution or pooling) along one side, as torch computes it.

    Zero or less means the input is too small. With ``ceil_mode`` the count rounds up, so a window
    may reach past the input (a 2-wide side still gives one 3-wide window), but the last window must
    start inside the input or its left padding (torch's rule).
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return max(out, 0)


def max_pool2d_reference(x: Tensor, kernel_size: Size2, stride: Optional[Size2] = None, padding: Size2 = 0,
                         ceil_mode: bool = False) -> Tensor:
    """torch's max pooling (dilation 1): ``[N, C, H, W]`` -> ``[N, C, H_out, W_out]``, same dtype."""
    return F.max_pool2d(x, kernel_size, stride, padding, ceil_mode=ceil_mode)


def cpp_reasons(x: Tensor, kernel_size: Size2, stride: Optional[Size2] = None, padding: Size2 = 0) -> List[str]:
    """Why the compiled kernel cannot pool ``x`` (empty list: it can)."""
    reasons = inference_reasons("max_pool2d", x)
    if reasons:  # before any shape test: under torch.export, each would add a guard to the program
        return reasons
    if x.dtype != torch.float32:
        reasons.append(f"it takes float32 maps, not {x.dtype}")
    if x.dim() != 4 or x.numel() == 0 or not x.is_contiguous(memory_format=torch.channels_last):
        reasons.append("it takes non-empty contiguous channels_last [N, C, H, W] maps")
    try:
        (kh, kw), (sh, sw), (ph, pw) = as_pair(kernel_size), as_pair(kernel_size if stride is None else stride), as_pair(padding)
    except (TypeError, ValueError, IndexError):
        return reasons + ["the window is not an int or a pair of ints (torch's max_pool2d says why)"]
    if min(sh, sw, kh, kw) < 1 or ph < 0 or pw < 0 or 2 * ph > kh or 2 * pw > kw:
        reasons.append("the window is invalid (torch's max_pool2d says why)")
    ext = load_extension()
    if isinstance(ext, ImportError) or not hasattr(ext, "max_pool2d_cpu"):
        reasons.append("the compiled extension perceptual_fast._C is not importable or predates max_pool2d_cpu "
                       "(rebuild it: pip install .)")
    return reasons


def max_pool2d(x: Tensor, kernel_size: Size2, stride: Optional[Size2] = None, padding: Size2 = 0,
               ceil_mode: bool = False) -> Tensor:
    """Max pooling (dilation 1) of ``x`` ``[N, C, H, W]`` -> ``[N, C, H_out, W_out]``, ``x``'s dtype and layout;
    ``stride`` None: the kernel size, as in torch.

    The compiled kernel where ``cpp_reasons`` is empty, else torch's ``max_pool2d`` (which also
    raises for windows or inputs that do not fit). Equal values either way.
    """
    if cpp_reasons(x, kernel_size, stride, padding):
        return max_pool2d_reference(x, kernel_size, stride, padding, ceil_mode)
    (kh, kw), (ph, pw) = as_pair(kernel_size), as_pair(padding)
    sh, sw = as_pair(kernel_size if stride is None else stride)
    n, c, h, w = x.shape
    out_h = window_output_size(h, kh, sh, ph, 1, ceil_mode)
    out_w = window_output_size(w, kw, sw, pw, 1, ceil_mode)
    if out_h < 1 or out_w < 1:
        return max_pool2d_reference(x, kernel_size, stride, padding, ceil_mode)  # torch raises: input too small
    out = torch.empty((n, c, out_h, out_w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    load_extension().max_pool2d_cpu(x.data_ptr(), n, h, w, c, [kh, kw, sh, sw, ph, pw], out.data_ptr(), out_h, out_w,
                                    torch.get_num_threads())
    return out


def max_pool2d_module(pool: torch.nn.MaxPool2d, x: Tensor) -> Tensor:
    """``pool(x)`` for a trunk's ``nn.MaxPool2d``: ``max_pool2d`` where the module is plain (no hooks,
    not a subclass), undilated and returns no indices; else the module itself."""
    if plain(pool, torch.nn.MaxPool2d) and as_pair(pool.dilation) == (1, 1) and not pool.return_indices:
        return max_pool2d(x, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode)
    return pool(x)
