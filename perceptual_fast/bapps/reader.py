"""Reader for the published BAPPS layout (Zhang et al. 2018):

    2afc/{train,val}/<category>/{ref,p0,p1,judge}/000000.png|.npy
    jnd/val/<category>/{p0,p1,same}/000000.png|.npy

Files are paired by name (``000123`` in ``ref/``, ``p0/``, ``p1/`` and ``judge/``), never by
sorted position: a missing, extra or unreadable file is an error that names it. Images are
resized exactly as the LPIPS loader does (PIL bilinear to ``size`` x ``size``, default 64; the
LPIPS float conversion ``(x / 255 - 0.5) / 0.5`` equals the Scorer's ``x / 127.5 - 1`` bit for
bit), and kept as uint8 NHWC so a pack can hold them unchanged.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..util.images import IMAGE_SUFFIXES, read_image
from ..util.progress import Progress

# task -> (image folders, judgement folder)
TASKS: Dict[str, Tuple[Tuple[str, ...], str]] = {"2afc": (("ref", "p0", "p1"), "judge"), "jnd": (("p0", "p1"), "same")}
SPLITS: Dict[str, Tuple[str, ...]] = {"2afc": ("train", "val"), "jnd": ("val",)}
SYNTHETIC_MARKER = "SYNTHETIC.txt"  # written by make-bapps at the data set's root
LAYOUT = "2afc/{train,val}/<category>/{ref,p0,p1,judge} and/or jnd/val/<category>/{p0,p1,same}"


@dataclass
class BappsPart:
    """One task and split, e.g. ``2afc/val``: every category's items, in category then name order.

    images: folder name (``ref``, ``p0``, ``p1``) -> uint8 ``[N, S, S, 3]`` (NHWC, as decoded).
    target: float32 ``[N]``: ``judge`` (share of people preferring p1) for 2afc, ``same`` (share
        saying the two patches look the same) for jnd.
    category: int64 ``[N]`` index into ``categories``. names: the file stem of each item.
    """

    task: str
    split: str
    images: Dict[str, Tensor]
    target: Tensor
    category: Tensor
    categories: Tuple[str, ...]
    names: Tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.task}/{self.split}"

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def batch(self, start: int, stop: int) -> Dict[str, Tensor]:
        """Items ``start:stop`` as ``[n, 3, S, S]`` uint8 views (NCHW shape, NHWC memory) plus the target."""
        out = {k: v[start:stop].permute(0, 3, 1, 2) for k, v in self.images.items()}
        out[TASKS[self.task][1]] = self.target[start:stop]
        return out


@dataclass
class Bapps:
    """A BAPPS data set in memory (or memory-mapped from a pack): ``parts`` keyed ``"2afc/val"`` etc.

    size: image side in pixels. synthetic: True for data made by ``make-bapps`` (``note`` states
    its rule). source: the folder or pack it came from.
    """

    parts: Dict[str, BappsPart]
    size: int
    source: str
    synthetic: bool = False
    note: str = ""
    extra: Dict[str, str] = field(default_factory=dict)


def parse_splits(splits: Sequence[str]) -> Tuple[str, ...]:
    """``("val",)``, ``("train", "val")`` or ``("all",)`` -> split names, checked."""
    names = tuple(dict.fromkeys(s for s in splits if s))
    if names == ("all",):
        return ("train", "val")
    bad = [s for s in names if s not in ("train", "val")]
    if bad or not names:
        raise ValueError(f"unknown split {', '.join(map(repr, bad)) or '(none)'}; choose from train, val, all")
    return names


def _part_dirs(root: Path, splits: Sequence[str]) -> List[Tuple[str, str, Path]]:
    if not root.is_dir():
        raise ValueError(f"no such BAPPS folder: {str(root)!r} (expected {LAYOUT})")
    found = [(task, split, root / task / split) for task in TASKS for split in SPLITS[task] if split in splits]
    found = [f for f in found if f[2].is_dir()]
    if not found:
        raise ValueError(
            f"{str(root)!r} holds no BAPPS split {'/'.join(splits)}: expected {LAYOUT} under it; "
            "`perceptual-fast make-bapps OUT_DIR` writes a small synthetic one"
        )
    return found


def _files(folder: Path, suffixes: Sequence[str]) -> Dict[str, Path]:
    """stem -> path of the files in ``folder`` (hidden files skipped); other files are errors."""
    if not folder.is_dir():
        raise ValueError(f"missing folder {str(folder)!r}; each category needs the subfolders of the layout {LAYOUT}")
    out: Dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.suffix.lower() not in suffixes or not p.is_file():
            raise ValueError(f"unexpected file {str(p)!r}: {folder.name}/ holds only {', '.join(sorted(suffixes))} files")
        if p.stem in out:
            raise ValueError(f"two files named {p.stem!r} in {str(folder)!r}: {out[p.stem].name} and {p.name}")
        out[p.stem] = p
    return out


def scan_category(folder: Path, task: str) -> Tuple[List[str], Dict[str, Dict[str, Path]]]:
    """Lists one category's items, paired by name: ``(stems, {subfolder: {stem: path}})``.

    A stem missing from any subfolder (or present in only some) is an error naming the files.
    """
    image_dirs, target_dir = TASKS[task]
    files = {d: _files(folder / d, IMAGE_SUFFIXES) for d in image_dirs}
    files[target_dir] = _files(folder / target_dir, {".npy"})
    stems = sorted(set().union(*(set(f) for f in files.values())))
    problems = []
    for stem in stems:
        lacking = [d for d in files if stem not in files[d]]
        if lacking:
            having = [f"{d}/{files[d][stem].name}" for d in files if stem in files[d]]
            problems.append(f"{stem}: missing from {', '.join(d + '/' for d in lacking)} (found {', '.join(having)})")
    if problems:
        more = f" ... ({len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValueError(
            f"{str(folder)!r}: items are paired by file name and some are incomplete: {'; '.join(problems[:10])}{more}; "
            "add the missing files or remove the extra ones"
        )
    if not stems:
        raise ValueError(f"{str(folder)!r} holds no items")
    return stems, files


def read_target(path: Path) -> float:
    """One judgement file: a ``.npy`` holding one value in [0, 1]."""
    try:
        value = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read judgement file {str(path)!r}: {err}") from err
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise ValueError(f"judgement file {str(path)!r} must hold one number; got {value.dtype} shape {value.shape}")
    v = float(value.reshape(()))
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"judgement file {str(path)!r} holds {v}; expected a fraction in [0, 1]")
    return v


def read_bapps(root: os.PathLike, size: int = 64, splits: Sequence[str] = ("val",), workers: Optional[int] = None,
               progress: bool = True) -> Bapps:
    """Reads the BAPPS folder ``root`` (the one holding ``2afc/`` and/or ``jnd/``).

    size: images are resized to ``size`` x ``size`` (PIL bilinear, as the LPIPS loader). splits:
    ``val``, ``train`` (2afc only) or both. workers: decoding threads (default: all cores).
    Returns a :class:`Bapps` with uint8 NHWC images; every file is checked (see module docstring).
    """
    root = Path(root)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels; got {size}")
    plan = []
    for task, split, folder in _part_dirs(root, parse_splits(splits)):
        categories = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not categories:
            raise ValueError(f"{str(folder)!r} holds no category folders (expected {LAYOUT})")
        plan.append((task, split, categories, [scan_category(folder / c, task) for c in categories]))
    total = sum(len(stems) * len(TASKS[task][0]) for task, _, _, scans in plan for stems, _ in scans)
    bar = Progress(total, f"reading {root}", "images", enabled=progress)
    parts: Dict[str, BappsPart] = {}
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for task, split, categories, scans in plan:
            image_dirs, target_dir = TASKS[task]
            n = sum(len(stems) for stems, _ in scans)
            images = {d: torch.empty(n, size, size, 3, dtype=torch.uint8) for d in image_dirs}
            offsets = np.cumsum([0] + [len(stems) for stems, _ in scans]).tolist()
            jobs = [(d, offsets[c] + i, files[d][stem])
                    for c, (stems, files) in enumerate(scans) for d in image_dirs for i, stem in enumerate(stems)]

            def decode(job):
                d, i, path = job
                images[d][i] = read_image(path, size).permute(1, 2, 0)
                return 1

            for done in pool.map(decode, jobs):
                bar.update(done)
            target = [read_target(files[target_dir][stem]) for stems, files in scans for stem in stems]
            category = [c for c, (stems, _) in enumerate(scans) for _ in stems]
            parts[f"{task}/{split}"] = BappsPart(
                task, split, images, torch.tensor(target, dtype=torch.float32), torch.tensor(category, dtype=torch.int64),
                tuple(categories), tuple(stem for stems, _ in scans for stem in stems),
            )
    marker = root / SYNTHETIC_MARKER
    note = marker.read_text().strip() if marker.is_file() else ""
    return Bapps(parts, size, str(root), synthetic=marker.is_file(), note=note)
