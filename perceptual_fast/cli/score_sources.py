"""What ``perceptual-fast score`` scores, as result rows batch by batch: pairs of image files (two
files, two folders, a pair list), or the pairs of a BAPPS folder or pack (``ref`` against ``p0`` and
against ``p1`` for each 2afc triplet, ``p0`` against ``p1`` for each jnd pair).

Both take the same three things from the run: ``skip`` (row names already written, for ``--resume``),
and ``rank``/``world`` (this process's share under torchrun: every world-th pair, or BAPPS item, so
both rows of a triplet come from one trunk pass of its three images).

A row: ``name``, ``a``, ``b`` (where the images come from), one value (or per-layer list) per
distance, ``error`` (empty when the pair scored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

import torch

from ..bapps.pack import load_bapps
from ..bapps.reader import TASKS, Bapps, ImageFiles
from ..util.pipeline import DecodeStats, Pair, PairBatch, decoded_batches

Row = Dict[str, object]


def is_bapps(path: Path) -> bool:
    """Whether ``path`` is a BAPPS pack (a file) or a folder holding ``2afc/`` or ``jnd/``."""
    return (path.is_file() and path.suffix == ".safetensors") or any((path / task).is_dir() for task in TASKS)


def _values(d: Dict[str, torch.Tensor], i: int, per_layer: bool) -> Dict[str, object]:
    return {k: (v[i].tolist() if per_layer else float(v[i])) for k, v in d.items()}


class FilePairs:
    """Pairs of image files, decoded by the streaming pipeline (``util.pipeline``)."""

    def __init__(self, pairs: List[Pair], batch_size: int, size: Optional[int], workers: int, stats: DecodeStats):
        self.pairs, self.batch_size, self.size, self.workers, self.stats = pairs, batch_size, size, workers, stats
        self.names = [name for name, _, _ in pairs]

    def share(self, rank: int, world: int) -> List[str]:
        """The row names this process scores."""
        return self.names[rank::world]

    def rows(self, scorer, per_layer: bool, skip: Set[str], rank: int, world: int) -> Iterator[List[Row]]:
        todo = [p for p in self.pairs[rank::world] if p[0] not in skip]
        for batch in decoded_batches(todo, self.batch_size, self.size, self.workers, stats=self.stats,
                                     pin_memory=scorer.device.type == "cuda"):
            yield self._rows(batch, scorer, per_layer)

    @staticmethod
    def _rows(batch: PairBatch, scorer, per_layer: bool) -> List[Row]:
        if batch.a is None:
            return [{"name": n, "a": str(pa), "b": str(pb), "error": e} for (n, pa, pb), e in zip(batch.pairs, batch.errors)]
        with torch.no_grad():
            d = scorer.distance(batch.a, batch.b, per_layer=per_layer)
        return [{"name": n, "a": str(pa), "b": str(pb), **_values(d, i, per_layer), "error": ""}
                for i, (n, pa, pb) in enumerate(batch.pairs)]


class BappsPairs:
    """The compared pairs of a BAPPS folder (decoded as used, a few batches ahead) or pack (memory-mapped).

    Row names: ``<task>/<split>/<category>/<stem>`` for jnd, with ``:p0`` / ``:p1`` for the two pairs of
    a 2afc triplet. ``a``/``b``: the image files, or ``PACK#<part>/<folder>/<index>`` for a pack.
    """

    def __init__(self, data: Bapps, batch_size: int, workers: Optional[int]):
        self.data, self.batch_size, self.workers = data, batch_size, workers
        # (part key, item index, that item's row names and their (a, b) folders), in data order
        self.items: List[Tuple[str, int, Tuple[Tuple[str, str, str], ...]]] = []
        for key, part in data.parts.items():
            sides = (("p0", "ref", "p0"), ("p1", "ref", "p1")) if part.task == "2afc" else (("", "p0", "p1"),)
            for i, stem in enumerate(part.names):
                base = f"{key}/{part.categories[int(part.category[i])]}/{stem}"
                self.items.append((key, i, tuple((f"{base}:{s}" if s else base, a, b) for s, a, b in sides)))
        self.names = [name for _, _, rows in self.items for name, _, _ in rows]

    @classmethod
    def load(cls, path: Path, batch_size: int, size: Optional[int], splits: Sequence[str],
             workers: Optional[int]) -> "BappsPairs":
        """A BAPPS folder (images of ``size``, default 64) or pack, restricted to ``splits``."""
        return cls(load_bapps(path, size=size, splits=splits, progress=False), batch_size, workers)

    def share(self, rank: int, world: int) -> List[str]:
        return [name for _, _, rows in self.items[rank::world] for name, _, _ in rows]

    def _where(self, key: str, folder: str, i: int) -> str:
        source = self.data.parts[key].images[folder]
        return str(source.paths[i]) if isinstance(source, ImageFiles) else f"{self.data.source}#{key}/{folder}/{i}"

    def rows(self, scorer, per_layer: bool, skip: Set[str], rank: int, world: int) -> Iterator[List[Row]]:
        todo: Dict[str, List[Tuple[int, tuple]]] = {}
        for key, i, rows in self.items[rank::world]:
            if any(name not in skip for name, _, _ in rows):
                todo.setdefault(key, []).append((i, rows))
        for key, chosen in todo.items():
            part = self.data.parts[key]
            indices = [i for i, _ in chosen]
            for start, batch in part.batches(self.batch_size, self.workers, items=indices):
                images = {k: v for k, v in batch.items() if k in part.images}
                with torch.no_grad():
                    if part.task == "2afc":
                        r = scorer.score(images, per_layer=per_layer)
                        by_side = {"p0": r["d0"], "p1": r["d1"]}
                    else:
                        by_side = {"p1": scorer.distance(images["p0"], images["p1"], per_layer=per_layer)}
                out = []
                for j, (i, rows) in enumerate(chosen[start : start + images["p0"].shape[0]]):
                    out += [{"name": name, "a": self._where(key, a, i), "b": self._where(key, b, i),
                             **_values(by_side[b], j, per_layer), "error": ""} for name, a, b in rows if name not in skip]
                yield out


__all__ = ["BappsPairs", "FilePairs", "Row", "is_bapps"]
