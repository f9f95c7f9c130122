"""Labelled image sets for training classifiers, every source as one in-memory form (``ClassData``).

Sources (``load_class_data``):
  * ``"synthetic"``: SYNTHETIC classes made on the fly (``synthetic_classes``); class k is a
    grating whose orientation lies in the k-th of K equal bins of [0, pi), with random frequency,
    phase, colours, a random occluding disc and pixel noise. Learnable in a few hundred steps by a
    small ResNet; no data or download needed (tests, the demo).
  * a folder of downsampled-ImageNet npz batches (``train_data_batch_*``, ``val_data``; see
    :mod:`perceptual_fast.study.imagenet64`).
  * an image-folder tree ``ROOT/{train,val}/<class>/<image>`` (decoded once, resized to ``size``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..util.images import IMAGE_SUFFIXES, read_image
from ..util.progress import Progress
from .class_data import ClassData
from .imagenet64 import is_imagenet64, load_imagenet64


def synthetic_classes(n: int, size: int = 64, num_classes: int = 6, seed: int = 0) -> ClassData:
    """``n`` SYNTHETIC labelled images ``[n, 3, size, size]`` uint8, classes balanced (label = index mod K).

    Class k: a grating with orientation ``(k + u) pi / K``, u uniform in [-0.3, 0.3] (so neighbouring
    classes do not overlap), 1.5-4 cycles per image, random phase, two random colours, a random
    disc of flat colour (half of the images) and Gaussian pixel noise (std 0.1 on [-1, 1]).
    Deterministic in ``seed``.
    """
    if num_classes < 2:
        raise ValueError(f"synthetic classes need num_classes >= 2, got {num_classes}")
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    labels = torch.arange(n) % num_classes
    angle = (labels + 0.6 * (r(n) - 0.5)) * math.pi / num_classes
    freq, phase = 1.5 + 2.5 * r(n), 2 * math.pi * r(n)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    along = xx[None] * angle.cos()[:, None, None] + yy[None] * angle.sin()[:, None, None]  # [n, S, S]
    wave = 0.5 + 0.5 * torch.sin(freq[:, None, None] * math.pi * along + phase[:, None, None])
    c0, c1 = r(n, 3, 1, 1) * 2 - 1, r(n, 3, 1, 1) * 2 - 1
    img = c0 + (c1 - c0) * wave[:, None]
    cx, cy, rad = r(n, 1, 1) * 2 - 1, r(n, 1, 1) * 2 - 1, 0.1 + 0.25 * r(n, 1, 1)
    disc = (((xx[None] - cx) ** 2 + (yy[None] - cy) ** 2) < rad**2) & (r(n, 1, 1) < 0.5)
    img = torch.where(disc[:, None], r(n, 3, 1, 1) * 2 - 1, img)
    img = img + 0.1 * torch.randn(img.shape, generator=g)
    images = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    classes = tuple(f"orientation{k}" for k in range(num_classes))
    return ClassData(images, labels, classes, f"SYNTHETIC classes (seed {seed})", synthetic=True)


def image_folder(root: os.PathLike, split: str, size: int = 64, progress: bool = True) -> ClassData:
    """Decodes ``root/<split>/<class>/<image>`` (classes in sorted name order) to ``[N, 3, size, size]`` uint8."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise ValueError(f"image-folder data {str(root)!r} has no {split}/ folder; expected ROOT/{{train,val}}/<class>/<image>")
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    files = [(c, p) for c, name in enumerate(classes) for p in sorted((folder / name).iterdir())
             if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"{str(folder)!r} holds no class folders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    bar = Progress(len(files), f"decoding {folder}", "images", enabled=progress)
    images = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for i, (_, path) in enumerate(files):
        images[i] = read_image(path, size)
        bar.update(1)
    labels = torch.tensor([c for c, _ in files], dtype=torch.int64)
    return ClassData(images, labels, classes, str(folder))


def load_class_data(source: str, split: str, size: int = 64, num_classes: int = 6, synthetic_n: int = 2048,
                    seed: int = 0, progress: bool = True) -> ClassData:
    """The ``split`` (``train`` or ``val``) of ``source``: ``"synthetic"``, a downsampled-ImageNet npz
    folder or an image-folder tree (see the module docstring). Synthetic sets hold ``synthetic_n``
    images (val: a quarter of that, another seed)."""
    if source == "synthetic":
        n, s = (synthetic_n, seed) if split == "train" else (max(num_classes, synthetic_n // 4), seed + 7919)
        return synthetic_classes(n, size, num_classes, s)
    root = Path(source)
    if not root.is_dir():
        raise ValueError(f"training data {source!r} is neither 'synthetic' nor a folder "
                         "(npz batches or ROOT/{train,val}/<class>/)")
    if is_imagenet64(root):
        return load_imagenet64(root, split, size, progress)
    return image_folder(root, split, size, progress)
