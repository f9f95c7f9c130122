"""Image validation and LPIPS scaling (docs/design.md, section 2 Inputs).

Images are ``[N, 3, H, W]``: float tensors in [-1, 1] (the LPIPS convention), or uint8 (0..255).
Other float conventions are accepted only when named with ``input_range``. Every problem is a
ValueError that says what was expected, what was seen and how to fix it.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .ops.fused_distance.extension import load_extension

RangeSpec = Union[None, str, Tuple[float, float]]

_RANGES = {"-1,1": (-1.0, 1.0), "0,1": (0.0, 1.0), "0,255": (0.0, 255.0)}

# LPIPS v0.1 scaling layer: the ImageNet mean/std expressed on [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def parse_range(spec: RangeSpec) -> Tuple[float, float]:
    """``None``/``"-1,1"``/``"0,1"``/``"0,255"`` or a ``(lo, hi)`` tuple -> ``(lo, hi)``."""
    if spec is None:
        return _RANGES["-1,1"]
    if isinstance(spec, str):
        key = spec.replace(" ", "").replace("[", "").replace("]", "")
        if key not in _RANGES:
            raise ValueError(f"input_range {spec!r} is not one of {', '.join(map(repr, _RANGES))}")
        return _RANGES[key]
    lo, hi = (float(v) for v in spec)
    if (lo, hi) not in _RANGES.values():
        raise ValueError(f"input_range {spec!r} is not one of {', '.join(map(repr, _RANGES))}")
    return lo, hi


def check_images(x: Tensor, name: str = "images", input_range: RangeSpec = None, min_size: int = 1,
                 check_values: bool = True) -> Tuple[float, float]:
    """Validates a batch of images; returns the value range of its convention: (0, 255) for uint8,
    else ``input_range`` (default (-1, 1)).

    x: ``[N, 3, H, W]`` uint8 (0..255) or float in ``input_range``.
    name: what the caller calls this tensor, used in error messages.
    min_size: the smallest height and width the trunk's taps allow.
    check_values: also check the values (finite, within the range; a device sync). Off, any float
        value passes, as in the ``lpips`` package: a loss on unconstrained network outputs.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [N, 3, H, W]; got {type(x).__name__} (use torch.as_tensor)")
    if x.dim() != 4:
        hint = " (a single image: add the batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"{name} must have 4 dimensions [N, 3, H, W]; got {x.dim()}: {tuple(x.shape)}{hint}")
    if x.shape[1] != 3:
        hint = ""
        if x.shape[-1] == 3:
            hint = " (channels-last NHWC data: permute with x.permute(0, 3, 1, 2))"
        elif x.shape[1] == 1:
            hint = " (grayscale: repeat the channel with x.expand(-1, 3, -1, -1))"
        raise ValueError(f"{name} must have 3 colour channels in dim 1 [N, 3, H, W]; got {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N = 0)")
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f"{name} are {x.shape[2]}x{x.shape[3]} pixels, too small for this trunk's taps: it needs at least "
            f"{min_size}x{min_size}; resize the images up (e.g. torch.nn.functional.interpolate) or pick another trunk"
        )
    if x.dtype == torch.uint8:
        return 0.0, 255.0
    if not x.is_floating_point():
        raise ValueError(f"{name} has dtype {x.dtype}; give uint8 (0..255) or floating-point images")
    if not check_values:
        return parse_range(input_range)
    lo, hi = x.detach().aminmax()
    lo, hi = float(lo), float(hi)
    if not (torch.isfinite(torch.tensor([lo, hi])).all()):
        raise ValueError(f"{name} contains NaN or infinite values; check the image loading and preprocessing")
    want_lo, want_hi = parse_range(input_range)
    slack = 1e-4 * (want_hi - want_lo)
    if lo < want_lo - slack or hi > want_hi + slack:
        hints = [f"input_range={k!r}" for k, (a, b) in _RANGES.items() if a - 1e-4 * (b - a) <= lo and hi <= b + 1e-4 * (b - a)]
        raise ValueError(
            f"{name} values span [{lo:.4g}, {hi:.4g}], outside the expected [{want_lo:g}, {want_hi:g}] "
            f"({'the LPIPS convention' if (want_lo, want_hi) == (-1.0, 1.0) else 'input_range=' + repr(input_range)}); "
            + (f"if the images are in another range, pass {' or '.join(hints)}" if hints else "rescale them into range")
            + " or give uint8 images"
        )
    if input_range is None and lo >= 0.0 and x[0].numel() >= 3 * 8 * 8:
        warnings.warn(
            f"{name}: every value is >= 0 (range [{lo:.3g}, {hi:.3g}]) but images are expected in [-1, 1]; if they "
            "are in [0, 1], pass input_range='0,1' (scoring [0, 1] images as [-1, 1] is the most common LPIPS "
            "misuse); pass input_range='-1,1' to silence this warning",
            UserWarning,
            stacklevel=4,
        )
    return want_lo, want_hi


def scaled_batch(
    batches: Sequence[Tuple[Tensor, Tuple[float, float]]],
    dtype: torch.dtype,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Tensor:
    """Concatenates image batches straight into LPIPS's scaled space, one affine pass each.

    batches: ``([N_i, 3, H, W]`` images, their value range from ``check_images``) pairs.
    Returns ``[sum N_i, 3, H, W]`` in ``dtype`` on ``device``, laid out in ``memory_format``
    (what the trunk runs fastest on): ``(unit(x) - shift) / scale`` with
    unit(x) the [-1, 1] image, folded into one per-channel ``x * alpha + beta``. Without gradients
    each batch is written into its slice of the output (no [-1, 1] copy, no concatenation copy).
    """
    shift = torch.tensor(SHIFT, dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor(SCALE, dtype=torch.float64).view(1, 3, 1, 1)
    parts = []
    for x, (lo, hi) in batches:
        alpha = (2.0 / (hi - lo)) / scale
        beta = (-1.0 - 2.0 * lo / (hi - lo) - shift) / scale
        parts.append((x.to(device), alpha.to(device=device, dtype=dtype), beta.to(device=device, dtype=dtype)))
    if torch.is_grad_enabled() and any(x.requires_grad for x, _, _ in parts):
        scaled = [x.to(dtype) * alpha + beta for x, alpha, beta in parts]  # the same arithmetic as below
        return torch.cat(scaled).contiguous(memory_format=memory_format)
    shape = (sum(x.shape[0] for x, _, _ in parts), *parts[0][0].shape[1:])
    out = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
    start = 0
    for x, alpha, beta in parts:
        view = out[start : start + x.shape[0]]
        if not _scale_images_in_one_pass(x, alpha, beta, view, memory_format):
            _scale_images_with_torch(x, alpha, beta, view, memory_format)
        start += x.shape[0]
    return out


def _scale_images_with_torch(x: Tensor, alpha: Tensor, beta: Tensor, out: Tensor, memory_format: torch.memory_format
                             ) -> None:
    """``out = x * alpha + beta`` (a multiply, then an add) in torch ops, on any device and dtype."""
    if memory_format == torch.contiguous_format:
        out.copy_(x).mul_(alpha).add_(beta)  # a cast copy, then the affine in place
        return
    # the per-channel affine runs on an NCHW copy that is then laid out once: on channels_last
    # (3 innermost channels) it ran ~5x slower
    staged = x.to(dtype=out.dtype, memory_format=torch.contiguous_format, copy=True)
    out.copy_(staged.mul_(alpha).add_(beta))


def _scale_images_in_one_pass(x: Tensor, alpha: Tensor, beta: Tensor, out: Tensor, memory_format: torch.memory_format
                              ) -> bool:
    """``out = x * alpha + beta`` by the compiled kernel (csrc/scale_images_cpu.cpp) where it applies: CPU,
    contiguous NCHW RGB uint8 or float32 images into a float32 ``out`` (a batch slice, NCHW or
    channels_last). One read of ``x`` and one write of ``out``, bit for bit torch's ``x.float() * alpha +
    beta``; torch's cast, affine and layout copy take four passes (192 uint8 images of 64x64 on 2 cores:
    0.8 ms in cache, 1.5 ms straight after a trunk pass). Returns False, writing nothing, where it does
    not apply."""
    channels_last = memory_format == torch.channels_last
    if (x.device.type != "cpu" or out.dtype != torch.float32 or x.dtype not in (torch.uint8, torch.float32)
            or x.shape[1] != 3 or x.shape[0] == 0 or not x.is_contiguous()
            or not out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)):
        return False
    ext = load_extension()
    if isinstance(ext, ImportError):
        return False
    n, _, h, w = x.shape
    alpha, beta = alpha.reshape(3).contiguous(), beta.reshape(3).contiguous()
    ext.scale_images_cpu(x.data_ptr(), "uint8" if x.dtype == torch.uint8 else "float32", n, h * w, alpha.data_ptr(),
                         beta.data_ptr(), out.data_ptr(), channels_last, torch.get_num_threads())
    return True


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Both image batches must have the same [N, 3, H, W] shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape [N, 3, H, W]; "
            "resize or crop them to a common size and pair them one to one"
        )


def lpips_scaling(x: Tensor) -> Tensor:
    """LPIPS v0.1 preprocessing ``(x - shift) / scale``: ``[N, 3, H, W]`` in [-1, 1] -> same shape."""
    shift = torch.tensor(SHIFT, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    scale = torch.tensor(SCALE, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - shift) / scale


def optional_judge(judge: Optional[Tensor], batch: int) -> Optional[Tensor]:
    """Checks human judgements: ``[N]`` fractions in [0, 1] preferring p1 (``[N, 1]`` is flattened)."""
    if judge is None:
        return None
    judge = torch.as_tensor(judge)
    if judge.numel() != batch:
        raise ValueError(f"judge must hold one value per triplet ({batch}); got shape {tuple(judge.shape)}")
    judge = judge.reshape(batch).to(torch.float64)
    if not bool(torch.isfinite(judge).all()) or bool((judge < 0).any()) or bool((judge > 1).any()):
        raise ValueError("judge values must be fractions in [0, 1] (share of people preferring p1)")
    return judge
