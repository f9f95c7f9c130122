"""Scores against human judgements: 2AFC agreement, PS and JND mAP (docs/design.md, section 5 2AFC and JND mAP)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
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


def category_means(values: Tensor, category: Tensor, n_categories: int) -> Tensor:
    """Mean of ``values`` ``[N]`` within each category: ``category`` ``[N]`` int64 in [0, K) -> ``[K]`` float64
    (NaN for a category with no items)."""
    v = values.to(torch.float64)
    sums = torch.zeros(n_categories, dtype=torch.float64).index_add_(0, category, v)
    counts = torch.zeros(n_categories, dtype=torch.float64).index_add_(0, category, torch.ones_like(v))
    return sums / counts


def perceptual_score(category_2afc: Sequence[float]) -> float:
    """PS: 100 x the unweighted mean of the categories' 2AFC scores (each in [0, 1])."""
    if not category_2afc:
        raise ValueError("PS needs the 2AFC score of at least one category")
    return 100.0 * sum(category_2afc) / len(category_2afc)


def jnd_map(d: Tensor, same: Tensor) -> float:
    """JND score as LPIPS computes it: the average precision (VOC, area under the precision
    envelope; not the 07 11-point form) of ranking pairs by ascending distance against the share
    of people who called them the same.

    d: ``[N]`` distances. same: ``[N]`` fractions in [0, 1]. Pairs are ordered with numpy's default
    argsort of the distances as float64, as the reference does, so tied distances rank the same way.
    """
    if d.dim() != 1 or d.shape != same.shape:
        raise ValueError(f"d and same must be [N] each; got {tuple(d.shape)} and {tuple(same.shape)}")
    order = np.argsort(d.detach().cpu().to(torch.float64).numpy())
    s = same.detach().cpu().to(torch.float64).numpy()[order]
    true_pos = np.cumsum(s)
    false_pos = np.cumsum(1.0 - s)
    false_neg = np.sum(s) - true_pos
    precision = true_pos / (true_pos + false_pos)
    recall = true_pos / (true_pos + false_neg)  # not true_pos / sum(s): the reference's rounding, for equal scores
    # precision envelope over recall in [0, 1], then the area where recall steps
    rec = np.concatenate(([0.0], recall, [1.0]))
    env = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    steps = np.nonzero(rec[1:] != rec[:-1])[0]
    return float(np.sum((rec[steps + 1] - rec[steps]) * env[steps + 1]))
