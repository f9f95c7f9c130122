"""Low-level baselines as the LPIPS paper computes them (its trainer's ``L2``/``SSIM`` in Lab, and PSNR),
built on scikit-image's colour conversion and metrics (the optional extra ``baselines``).

Each is a distance between uint8 images (smaller = more alike), reported beside the deep ones:
  ``l2``    0.5 mean((Lab0 - Lab1) / 100)^2                 (LPIPS ``L2``, colorspace Lab)
  ``ssim``  (1 - SSIM(Lab0, Lab1, data_range=100)) / 2      (LPIPS ``DSSIM``, colorspace Lab; 7x7 window)
  ``psnr``  -PSNR(rgb0, rgb1, peak 255) in dB               (negated so that smaller is closer; identical: -inf)
As in LPIPS, the images first make the loader's float round trip ``uint8(((x/127.5 - 1) + 1) * 127.5)``
in float32 (which truncates levels 1..63 down by one) and Lab is kept as float32, so scores match theirs.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

BASELINES = ("l2", "ssim", "psnr")


def _skimage():
    try:
        from skimage import color, metrics
    except ImportError as err:
        raise ValueError(
            "the l2/ssim/psnr baselines need scikit-image: pip install 'perceptual_fast[baselines]' (or scikit-image)"
        ) from err
    return color, metrics


def lpips_roundtrip(x: Tensor) -> np.ndarray:
    """uint8 ``[N, 3, H, W]`` -> uint8 ``[N, H, W, 3]`` numpy after the LPIPS loader's float round trip."""
    f = x.permute(0, 2, 3, 1).numpy().astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return ((f + np.float32(1.0)) * np.float32(127.5)).astype(np.uint8)


def _lab(rgb: np.ndarray) -> np.ndarray:
    color, _ = _skimage()
    return color.rgb2lab(rgb).astype(np.float32)


def _l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(0.5 * np.mean((_lab(a) / np.float32(100.0) - _lab(b) / np.float32(100.0)) ** 2))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    _, metrics = _skimage()
    return float((1.0 - metrics.structural_similarity(_lab(a), _lab(b), data_range=100.0, channel_axis=-1)) / 2.0)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    _, metrics = _skimage()
    with np.errstate(divide="ignore"):
        return -float(metrics.peak_signal_noise_ratio(a, b, data_range=255))


_FUNCS: Dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"l2": _l2, "ssim": _ssim, "psnr": _psnr}


def split_distance_names(names: Sequence[str]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """Splits requested names into (deep distances, baselines), order kept."""
    names = tuple(n.strip() for n in names if n.strip())
    return tuple(n for n in names if n not in BASELINES), tuple(n for n in names if n in BASELINES)


def baseline_distance(name: str, x0: Tensor, x1: Tensor) -> Tensor:
    """The baseline ``name`` between uint8 images ``x0``, ``x1`` ``[N, 3, H, W]`` (paired by index): ``[N]`` float64."""
    if name not in _FUNCS:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    if x0.dtype != torch.uint8 or x1.dtype != torch.uint8 or x0.shape != x1.shape or x0.dim() != 4 or x0.shape[1] != 3:
        raise ValueError(f"baselines take two uint8 [N, 3, H, W] batches of one shape; got {x0.dtype} {tuple(x0.shape)} "
                         f"and {x1.dtype} {tuple(x1.shape)}")
    _skimage()
    a, b = lpips_roundtrip(x0), lpips_roundtrip(x1)
    return torch.tensor([_FUNCS[name](a[i], b[i]) for i in range(a.shape[0])], dtype=torch.float64)
