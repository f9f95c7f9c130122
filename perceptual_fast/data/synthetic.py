"""Synthetic triplets for the demo and tests: procedural reference images, distortions of
several kinds and strengths, and judgements from a stated rule. Always labelled synthetic.

Rule for the judgements: the share of people preferring p1 is
``h = sigmoid(JUDGE_SLOPE * (s0 - s1))``, rounded to fifths (five judges per triplet), where
``s0``, ``s1`` in [0, 1] are the distortion strengths of p0 and p1: people prefer the patch that
is distorted less, more clearly so when the strengths differ more.
"""

from __future__ import annotations

import math
from typing import Dict

import torch
from torch import Tensor

KINDS = ("noise", "blur", "color", "contrast", "blocks")
JUDGE_SLOPE = 6.0
JUDGES = 5


def reference_images(n: int, size: int, generator: torch.Generator) -> Tensor:
    """``[n, 3, size, size]`` float in [-1, 1]: smooth colour gradients, gratings and shapes."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        r = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
        base = (r(3, 1, 1) * 2 - 1) * 0.6 + (r(3, 1, 1) - 0.5) * xx + (r(3, 1, 1) - 0.5) * yy
        freq, angle = 2 + 10 * r(1), math.pi * float(r(1))
        grating = torch.sin(freq * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) + 6.3 * r(1))
        img = base + 0.35 * (r(3, 1, 1) * 2 - 1) * grating
        for _ in range(3):  # a few discs and boxes of flat colour
            cx, cy, rad = r(1) * 2 - 1, r(1) * 2 - 1, 0.15 + 0.35 * r(1)
            mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < rad**2) if r(1) < 0.5 else ((xx - cx).abs() < rad) & ((yy - cy).abs() < rad)
            img = torch.where(mask, r(3, 1, 1) * 2 - 1, img)
        out[i] = img.clamp(-1, 1)
    return out


def distort(x: Tensor, kind: str, strength: float, generator: torch.Generator) -> Tensor:
    """A distorted copy of one image ``x`` ``[3, H, W]`` in [-1, 1]; ``strength`` in [0, 1]."""
    if kind == "noise":
        y = x + 0.5 * strength * torch.randn(x.shape, generator=generator)
    elif kind == "blur":
        k = 1 + 2 * int(round(1 + 4 * strength))
        y = torch.nn.functional.avg_pool2d(x[None], k, stride=1, padding=k // 2, count_include_pad=False)[0]
    elif kind == "color":
        y = x + strength * 0.8 * (torch.rand(3, 1, 1, generator=generator) * 2 - 1)
    elif kind == "contrast":
        y = x * (1 - 0.8 * strength)
    elif kind == "blocks":
        f = 1 + int(round(7 * strength))
        small = torch.nn.functional.avg_pool2d(x[None], f, ceil_mode=True)
        y = torch.nn.functional.interpolate(small, size=x.shape[1:], mode="nearest")[0]
    else:
        raise ValueError(f"unknown distortion {kind!r}; choose from {', '.join(KINDS)}")
    return y.clamp(-1, 1)


def synthetic_triplets(n: int, size: int = 64, seed: int = 0) -> Dict[str, Tensor]:
    """n SYNTHETIC triplets: ``ref``, ``p0``, ``p1`` uint8 ``[n, 3, size, size]``, ``judge`` ``[n]``
    float (share preferring p1, the rule above), ``strength0``/``strength1`` ``[n]``, ``kind`` ``[n]``
    (index into KINDS). Deterministic in ``seed``."""
    g = torch.Generator().manual_seed(seed)
    ref = reference_images(n, size, g)
    kinds = torch.randint(0, len(KINDS), (n,), generator=g)
    s0, s1 = torch.rand(n, generator=g), torch.rand(n, generator=g)
    p0 = torch.stack([distort(ref[i], KINDS[int(kinds[i])], float(s0[i]), g) for i in range(n)])
    p1 = torch.stack([distort(ref[i], KINDS[int(kinds[i])], float(s1[i]), g) for i in range(n)])
    judge = judge_rule(s0, s1)
    return {"ref": to_uint8(ref), "p0": to_uint8(p0), "p1": to_uint8(p1), "judge": judge, "strength0": s0, "strength1": s1,
            "kind": kinds}


def judge_rule(s0: Tensor, s1: Tensor) -> Tensor:
    """The stated rule: share of JUDGES people preferring p1, ``round(sigmoid(JUDGE_SLOPE (s0 - s1)) JUDGES) / JUDGES``.

    s0, s1: ``[n]`` distortion strengths in [0, 1] of p0 and p1. Returns ``[n]`` float32 in {0, 1/5, ..., 1}.
    """
    return torch.round(torch.sigmoid(JUDGE_SLOPE * (s0 - s1)) * JUDGES) / JUDGES


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] (any shape) -> uint8 0..255, rounded."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
