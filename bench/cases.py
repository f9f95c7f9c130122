"""Benchmark cases shared by the pytest-benchmark file and the table script.

Features are ReLU'd normals at the tap shapes of a trunk for 64x64 inputs (batch 64), the size
the paper and BAPPS use.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

import perceptual_fast as pf
from perceptual_fast.trunks import load_trunk

BATCH = 64
NETS = ("alexnet", "vgg16", "squeezenet1_1")
DISTANCES = ("spatial", "lpips")  # what the cpp backend implements so far


def tap_features(net: str, batch: int = BATCH, seed: int = 0) -> tuple:
    """Two lists of float32 feature maps at ``net``'s tap shapes for 64x64 images."""
    shapes = load_trunk(net, weights="random", head=False).tap_shapes(64, 64)
    g = torch.Generator().manual_seed(seed)
    make = lambda: [torch.relu(torch.randn(batch, *s, generator=g)) for s in shapes]  # noqa: E731
    return make(), make()


def feature_bytes(feats: List[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in feats)


def runner(backend: str, feats0, feats1) -> Callable[[], Dict[str, torch.Tensor]]:
    lin = [torch.rand(t.shape[1]) for t in feats0]
    return lambda: pf.fused_distance(feats0, feats1, distances=DISTANCES, lin=lin, backend=backend)
