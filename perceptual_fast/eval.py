"""Scores against human judgements: 2AFC agreement (DESIGN.md section 3)."""

from __future__ import annotations

import torch
from torch import Tensor


def two_afc(d0: Tensor, d1: Tensor, judge: Tensor) -> Tensor:
    """Per-triplet 2AFC agreement, exactly as LPIPS computes it.

    d0, d1: ``[N]`` distances of p0 and p1 to the reference. judge: ``[N]`` fraction of people
    preferring p1, in [0, 1]. Returns ``[N]`` float64:
    ``(d0 < d1)(1 - h) + (d1 < d0) h + 0.5 [d0 == d1]``.
    """
    if not (d0.shape == d1.shape == judge.shape) or d0.dim() != 1:
        raise ValueError(f"d0, d1 and judge must be [N] each; got {tuple(d0.shape)}, {tuple(d1.shape)}, {tuple(judge.shape)}")
    h = judge.to(torch.float64)
    d0, d1 = d0.to(h.device), d1.to(h.device)
    return (d0 < d1).to(h.dtype) * (1.0 - h) + (d1 < d0).to(h.dtype) * h + (d0 == d1).to(h.dtype) * 0.5
