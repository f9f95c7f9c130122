"""Weights for Scorers of every distance in tests: DISTS alpha/beta for any taps, with LPIPS's lin file."""

from typing import Sequence

import torch

import perceptual_fast as pf


def dists_weights(channels: Sequence[int], seed: int = 0) -> list:
    """Random DISTS alpha/beta ``[2, C_l]`` for taps of ``channels``, positive and summing to 1 as DISTS's do."""
    g = torch.Generator().manual_seed(seed)
    alpha_beta = [torch.rand(2, c, generator=g) + 0.1 for c in channels]
    total = sum(float(w.sum()) for w in alpha_beta)
    return [w / total for w in alpha_beta]


def lpips_and_dists_weights(trunk: str, seed: int = 0) -> dict:
    """``lin=`` for a Scorer of every distance on an LPIPS net: the lpips package's lin file and random
    DISTS alpha/beta for its taps."""
    return {"lpips": "lpips", "dists": dists_weights(pf.load_trunk(trunk, weights="random", head=False).tap_channels, seed)}
