"""Shared fixtures: real photos (scikit-image's bundled samples), the `lpips` reference package
wired to the same random trunk weights, and NaN-poisoned output buffers. This folder is put on
sys.path (pytest runs in importlib mode) for the helper modules beside this file (scorer_weights.py,
dists_package.py)."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# Without a GPU, Triton kernels run in its interpreter on CPU tensors (set before triton is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def photo_batch(names, size, seed=0):
    """A float32 batch ``[N, 3, h, w]`` in [-1, 1] of crops of scikit-image's bundled photos,
    resized with bilinear interpolation and lightly perturbed so no two batches are alike."""
    from skimage import data

    h, w = size
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        img = getattr(data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = img[..., :3]
        H, W = img.shape[:2]
        top, left = rng.integers(0, max(1, H - H // 2)), rng.integers(0, max(1, W - W // 2))
        crop = torch.from_numpy(np.ascontiguousarray(img[top : top + H // 2, left : left + W // 2])).permute(2, 0, 1)
        t = torch.nn.functional.interpolate(crop[None].float() / 127.5 - 1, size=(h, w), mode="bilinear", align_corners=False)
        out.append(t[0])
    return torch.stack(out).clamp(-1, 1)


def distort(x, kind, strength, seed=0):
    """A distorted copy of ``x`` ([-1, 1] floats): noise, blur, or a colour shift."""
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        y = x + strength * torch.randn(x.shape, generator=g)
    elif kind == "blur":
        k = int(2 * round(strength) + 1)
        y = torch.nn.functional.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
    elif kind == "shift":
        y = x + strength * torch.tensor([1.0, -0.5, 0.25]).view(1, 3, 1, 1)
    else:
        raise ValueError(kind)
    return y.clamp(-1, 1)


@pytest.fixture
def photos():
    return photo_batch


@pytest.fixture
def distorted():
    return distort


LPIPS_NET = {"alexnet": "alex", "vgg16": "vgg", "squeezenet1_1": "squeeze"}


@pytest.fixture
def lpips_like():
    """``make(trunk_module, trunk_name, use_lin)``: an `lpips.LPIPS` with our trunk's weights and the
    package's own v0.1 lin weights (loaded by the package itself)."""
    # Skip only where lpips is not installed: a broken install (say a torchvision built for another
    # torch, an ImportError that is no ModuleNotFoundError) fails the parity tests instead of skipping them.
    lpips = pytest.importorskip("lpips", exc_type=ModuleNotFoundError)

    def make(trunk, trunk_name, use_lin):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = lpips.LPIPS(net=LPIPS_NET[trunk_name], pnet_rand=True, lpips=use_lin, verbose=False)
        ours = trunk.features.state_dict()
        # lpips names its slices net.sliceK.<torchvision index>.<param>: map by the index.
        mapped = {k: ours[".".join(k.split(".")[1:])] for k in model.net.state_dict()}
        model.net.load_state_dict(mapped, strict=True)
        return model.eval()

    return make


@pytest.fixture
def poisoned():
    """``poisoned(shape)``: a float32 tensor full of NaN, so any element a kernel fails to write shows."""
    return lambda *shape: torch.full(shape, float("nan"), dtype=torch.float32)
