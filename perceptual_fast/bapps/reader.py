"""Reader for the published BAPPS layout (Zhang et al. 2018):

    2afc/{train,val}/<category>/{ref,p0,p1,judge}/000000.png|.npy
    jnd/val/<category>/{p0,p1,same}/000000.png|.npy

Files are paired by name (``000123`` in ``ref/``, ``p0/``, ``p1/`` and ``judge/``), never by
sorted position: a missing, extra or unreadable file is an error that names it. Images are
resized exactly as the LPIPS loader does (PIL bilinear to ``size`` x ``size``, default 64; the
LPIPS float conversion ``(x / 255 - 0.5) / 0.5`` equals the Scorer's ``x / 127.5 - 1`` bit for
bit), and kept as uint8 NHWC so a pack can hold them unchanged.

Reading a folder lists and checks its files and reads the judgements; the images stay on disk
(:class:`ImageFiles`) and are decoded as they are used, batch by batch, by worker threads a few
batches ahead of the consumer (:meth:`BappsPart.batches`): memory holds a few batches, not the data
set, and decoding overlaps the trunk.
"""

from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

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


class ImageFiles:
    """One image folder kind of a part (``ref``, ``p0``...) still on disk: ``paths[i]`` is item i,
    decoded on demand to uint8 NHWC ``[S, S, 3]`` (``size`` x ``size``, PIL bilinear as LPIPS).
    Indexing with an int or a slice decodes those items (``[n, S, S, 3]`` for a slice)."""

    def __init__(self, paths: Sequence[Path], size: int):
        self.paths, self.size = list(paths), size
        self.dtype = torch.uint8

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        return (len(self.paths), self.size, self.size, 3)

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, i: int) -> Tensor:
        """Item ``i`` as uint8 ``[S, S, 3]``; an unreadable file raises ValueError naming it."""
        return read_image(self.paths[i], self.size).permute(1, 2, 0)

    def __getitem__(self, index: Union[int, slice]) -> Tensor:
        if isinstance(index, slice):
            return torch.stack([self.decode(i) for i in range(*index.indices(len(self)))])
        return self.decode(index)


ImageSource = Union[Tensor, ImageFiles]


@dataclass
class BappsPart:
    """One task and split, e.g. ``2afc/val``: every category's items, in category then name order.

    images: folder name (``ref``, ``p0``, ``p1``) -> uint8 ``[N, S, S, 3]`` (NHWC): a tensor (from a
        pack, memory-mapped, or :meth:`materialized`) or :class:`ImageFiles` (a folder, decoded as used).
    target: float32 ``[N]``: ``judge`` (share of people preferring p1) for 2afc, ``same`` (share
        saying the two patches look the same) for jnd.
    category: int64 ``[N]`` index into ``categories``. names: the file stem of each item.
    """

    task: str
    split: str
    images: Dict[str, ImageSource]
    target: Tensor
    category: Tensor
    categories: Tuple[str, ...]
    names: Tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.task}/{self.split}"

    @property
    def on_disk(self) -> bool:
        """Whether the images are still files (decoded as used) rather than tensors."""
        return any(isinstance(v, ImageFiles) for v in self.images.values())

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def _with_target(self, images: Dict[str, Tensor], chosen: Union[slice, Tensor]) -> Dict[str, Tensor]:
        """NHWC images of some items -> the batch dict: NCHW-shaped views and the items' targets."""
        out = {k: v.permute(0, 3, 1, 2) for k, v in images.items()}
        out[TASKS[self.task][1]] = self.target[chosen]
        return out

    def batch(self, start: int, stop: int) -> Dict[str, Tensor]:
        """Items ``start:stop`` as ``[n, 3, S, S]`` uint8 views (NCHW shape, NHWC memory) plus the target."""
        return self._with_target({k: v[start:stop] for k, v in self.images.items()}, slice(start, stop))

    def select(self, items: Sequence[int]) -> Dict[str, Tensor]:
        """Items ``items`` (indices, in that order) as ``batch`` gives them: ``[n, 3, S, S]`` uint8 and the target."""
        index = torch.as_tensor(list(items), dtype=torch.int64)
        return self._with_target({k: torch.stack([v.decode(i) for i in items]) if isinstance(v, ImageFiles) else v[index]
                                  for k, v in self.images.items()}, index)

    def batches(self, batch_size: int, workers: Optional[int] = None, ahead: int = 2,
                items: Optional[Sequence[int]] = None) -> Iterator[Tuple[int, Dict[str, Tensor]]]:
        """``(start, batch(start, start + batch_size))`` over the whole part, in order; with ``items``
        (indices), ``(position in items, select(items[start:start + batch_size]))`` over those only.

        On disk, ``workers`` threads (default: all cores) decode up to ``ahead`` batches beyond the
        one the caller holds, so decoding overlaps the caller's work and memory holds at most
        ``ahead + 1`` batches.
        """
        count = len(self) if items is None else len(items)
        starts = range(0, count, batch_size)
        if not self.on_disk:
            for start in starts:
                stop = min(start + batch_size, count)
                yield start, self.batch(start, stop) if items is None else self.select(items[start:stop])
            return
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="bapps-decode") as pool:
            queued: Deque[Tuple[int, Dict[str, list]]] = deque()
            todo = iter(starts)

            def submit(start: int) -> None:
                chosen = range(start, min(start + batch_size, count))
                chosen = chosen if items is None else [items[i] for i in chosen]
                queued.append((start, {k: [pool.submit(v.decode, i) for i in chosen] for k, v in self.images.items()}))

            def refill(limit: int) -> None:
                while len(queued) < limit:
                    start = next(todo, None)
                    if start is None:
                        return
                    submit(start)

            refill(ahead + 1)
            while queued:
                start, futures = queued.popleft()
                refill(ahead)  # the caller holds this batch: at most `ahead` more decoded or decoding
                images = {k: torch.stack([f.result() for f in fs]) for k, fs in futures.items()}
                n = images[next(iter(images))].shape[0]
                chosen = slice(start, start + n) if items is None else torch.as_tensor(items[start : start + n])
                yield start, self._with_target(images, chosen)

    def materialized(self, device: Union[str, torch.device] = "cpu", workers: Optional[int] = None,
                     progress: Optional[Progress] = None) -> "BappsPart":
        """This part with its images as uint8 NHWC tensors on ``device`` (decoded batch by batch straight
        into them when on disk; copied otherwise)."""
        images = {k: torch.empty(v.shape, dtype=torch.uint8, device=device) for k, v in self.images.items()}
        for start, batch in self.batches(256, workers):
            n = batch[TASKS[self.task][1]].shape[0]
            for k in images:
                images[k][start : start + n].copy_(batch[k].permute(0, 2, 3, 1))
            if progress is not None:
                progress.update(n * len(images))
        return replace(self, images=images, target=self.target.clone(), category=self.category.clone())


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


def read_bapps(root: os.PathLike, size: int = 64, splits: Sequence[str] = ("val",)) -> Bapps:
    """Reads the BAPPS folder ``root`` (the one holding ``2afc/`` and/or ``jnd/``).

    size: images are resized to ``size`` x ``size`` (PIL bilinear, as the LPIPS loader). splits:
    ``val``, ``train`` (2afc only) or both. Returns a :class:`Bapps` whose parts hold the judgements
    and :class:`ImageFiles` (decoded as used); every file is listed and paired (module docstring),
    and every judgement read, before this returns.
    """
    root = Path(root)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels; got {size}")
    parts: Dict[str, BappsPart] = {}
    for task, split, folder in _part_dirs(root, parse_splits(splits)):
        categories = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not categories:
            raise ValueError(f"{str(folder)!r} holds no category folders (expected {LAYOUT})")
        scans = [scan_category(folder / c, task) for c in categories]
        image_dirs, target_dir = TASKS[task]
        images = {d: ImageFiles([files[d][stem] for stems, files in scans for stem in stems], size) for d in image_dirs}
        target = [read_target(files[target_dir][stem]) for stems, files in scans for stem in stems]
        category = [c for c, (stems, _) in enumerate(scans) for _ in stems]
        parts[f"{task}/{split}"] = BappsPart(
            task, split, images, torch.tensor(target, dtype=torch.float32), torch.tensor(category, dtype=torch.int64),
            tuple(categories), tuple(stem for stems, _ in scans for stem in stems),
        )
    marker = root / SYNTHETIC_MARKER
    note = marker.read_text().strip() if marker.is_file() else ""
    return Bapps(parts, size, str(root), synthetic=marker.is_file(), note=note)
