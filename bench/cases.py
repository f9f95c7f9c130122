"""Benchmark cases shared by the pytest-benchmark file and the table script.

Features are ReLU'd normals at the tap shapes of a trunk for 64x64 inputs (batch 64), the size
the paper and BAPPS use.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List, Optional

import torch

import perceptual_fast as pf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ops" / "fused_distance"))
from fused_distance_cases import make_feats  # noqa: E402  (the fused op's one feature factory)

BATCH = 64
# Tap shapes (C, H, W) for 64x64 inputs: the LPIPS slices and torchvision ResNet-50's 4 stage outputs.
TAP_SHAPES = {
    "alexnet": [(64, 15, 15), (192, 7, 7), (384, 3, 3), (256, 3, 3), (256, 3, 3)],
    "vgg16": [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4)],
    "resnet50": [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)],
}
DISTANCES = ("lpips", "spatial", "meanpool", "style")
"""The distances these benchmarks time together, as their recorded results did (dists, with a trunk
of its own, is timed in dists.py)."""
POINTWISE = ("lpips", "spatial", "meanpool")  # the memory-bound part: everything but the Gram stage


def tap_features(net: str, count: int = 2, batch: int = BATCH, seed: int = 0) -> List[List[torch.Tensor]]:
    """``count`` lists of float32 feature maps at ``net``'s tap shapes (the op's test factory)."""
    return make_feats(batch, TAP_SHAPES[net], count, seed)


def feature_bytes(feats: List[List[torch.Tensor]]) -> int:
    return sum(t.numel() * t.element_size() for lst in feats for t in lst)


def tap_lin(feats: List[List[torch.Tensor]], seed: int = 1) -> List[torch.Tensor]:
    """Seeded lpips channel weights ``[C_l]`` for the layers of ``feats``, on their device."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(t.shape[1], generator=g).to(t.device) for t in feats[0]]


def runner(backend: str, feats: List[List[torch.Tensor]], distances=DISTANCES,
           lin: Optional[List[torch.Tensor]] = None) -> Callable[[], object]:
    """The fused op on ``feats`` as a no-argument callable; ``lin`` defaults to ``tap_lin(feats)``."""
    lin = tap_lin(feats) if lin is None else lin
    return lambda: pf.fused_distance(*feats, distances=distances, lin=lin, backend=backend)


def style_flops(net: str, count: int, batch: int = BATCH) -> float:
    """Multiply-adds x 2 of the Gram differences the fused kernel computes (upper triangle only)."""
    per_sample = sum(c * (c + 4) / 2 * h * w * 2 * count for c, h, w in TAP_SHAPES[net])
    return per_sample * batch

