"""Downsampled ImageNet (Chrabaszcz et al. 2017) at 64x64: the npz batches as published.

Files: ``train_data_batch_1.npz`` ... ``train_data_batch_10.npz`` and ``val_data.npz`` (the ``.npz``
suffix may be absent), each with ``data`` uint8 ``[N, 12288]`` (channel planes: 4096 R, 4096 G,
4096 B values, rows of 64) and ``labels`` 1-based class numbers ``[N]``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import numpy as np
import torch

from ..util.progress import Progress
from .class_data import ClassData

SIDE = 64
_TRAIN = re.compile(r"^train_data_batch_(\d+)(\.npz)?$")
_VAL = re.compile(r"^val_data(\.npz)?$")


def _batch_files(root: Path, split: str) -> List[Path]:
    pattern = _TRAIN if split == "train" else _VAL
    found = [p for p in root.iterdir() if pattern.match(p.name)]
    return sorted(found, key=lambda p: int(pattern.match(p.name).group(1)) if split == "train" else 0)


def is_imagenet64(root: Path) -> bool:
    """Whether folder ``root`` holds downsampled-ImageNet batches."""
    return any(_TRAIN.match(p.name) or _VAL.match(p.name) for p in root.iterdir())


def load_imagenet64(root: Path, split: str, size: int = SIDE, progress: bool = True) -> ClassData:
    """The ``train`` or ``val`` split as uint8 ``[N, 3, 64, 64]`` with 0-based labels (1000 classes)."""
    if size != SIDE:
        raise ValueError(f"downsampled-ImageNet batches in {str(root)!r} are {SIDE}x{SIDE}; use --size {SIDE}")
    files = _batch_files(root, split)
    if not files:
        want = "train_data_batch_1.npz ..." if split == "train" else "val_data.npz"
        raise ValueError(f"{str(root)!r} holds no {split} batches ({want})")
    bar = Progress(len(files), f"reading {root} {split}", "files", enabled=progress)
    images, labels = [], []
    for path in files:
        with np.load(path if path.suffix == ".npz" else open(path, "rb")) as f:
            if "data" not in f or "labels" not in f:
                raise ValueError(f"{str(path)!r} lacks 'data' or 'labels': not a downsampled-ImageNet batch")
            data, lab = f["data"], np.asarray(f["labels"]).reshape(-1)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE or len(lab) != len(data):
            raise ValueError(f"{str(path)!r}: data must be uint8 [N, {3 * SIDE * SIDE}] with N labels; "
                             f"got {data.dtype} {data.shape} and {len(lab)} labels")
        if lab.min() < 1:
            raise ValueError(f"{str(path)!r}: labels must be 1-based (1..1000); found {int(lab.min())}")
        images.append(torch.from_numpy(data.reshape(-1, 3, SIDE, SIDE)))
        labels.append(torch.from_numpy(lab.astype(np.int64) - 1))
        bar.update(1)
    label = torch.cat(labels)
    classes = tuple(f"class{k + 1}" for k in range(max(1000, int(label.max()) + 1)))
    return ClassData(torch.cat(images), label, classes, f"{root} ({split})")
