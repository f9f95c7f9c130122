"""Scoring a sweep's checkpoints: the loop, resume and torchrun sharding (the package docstring has the whole story).

The BAPPS 2afc/val (and jnd/val) images go to the device once; a background thread builds the next checkpoint's trunk
while the current one is scored; each checkpoint's record is written atomically to ``OUT/done/<key>.json``
and reused by a rerun while the file and the settings are unchanged; under torchrun rank r takes
checkpoints r, r + W, ... and rank 0 gathers the records and writes the results.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...bapps.evaluate import evaluate_bapps
from ...bapps.pack import load_bapps
from ...bapps.reader import Bapps
from ...scorer import Scorer
from ...trunks import trunk_name
from ...util.atomic import write_text_atomically
from ...util.distributed import rank_and_world
from ...util.progress import Progress
from .discovery import expand_checkpoints, load_checkpoint
from .results import write_results

DONE_DIR = "done"
# settings newer than the first sweeps: a done record without them (an older sweep's) is still reused, its new
# columns (per-layer PS, JND mAP) left empty
_LATER_SETTINGS = ("jnd_pairs", "lin")


def _same_settings(stored: Any, current: Dict[str, Any]) -> bool:
    """Whether a record's settings are these. A record written before a later setting existed lacks it:
    it matches when it lacks only ``_LATER_SETTINGS`` (``lin`` only when none is used now: older sweeps had none)."""
    if not isinstance(stored, dict) or not set(stored) <= set(current):
        return False
    for key, value in current.items():
        if key not in stored and key in _LATER_SETTINGS and (key != "lin" or value is None):
            continue
        if stored.get(key, KeyError) != value:
            return False
    return True


def device_bapps(data: os.PathLike, device: torch.device, progress: bool = True) -> Bapps:
    """The 2afc/val part of a BAPPS pack or folder, and its jnd/val part where it has one, their images
    copied once to ``device`` (uint8 NHWC)."""
    bapps = load_bapps(data, splits=("val",), progress=progress)
    parts = {k: p for k, p in bapps.parts.items() if p.task in ("2afc", "jnd")}
    if not any(p.task == "2afc" for p in parts.values()):
        raise ValueError(f"{str(data)!r} holds no 2afc/val part; the sweep scores BAPPS 2AFC triplets")
    bar = Progress(sum(len(p) * len(p.images) for p in parts.values()), f"images to {device}", "images",
                   enabled=progress)
    moved = {k: p.materialized(device, progress=bar) for k, p in parts.items()}
    return Bapps(moved, bapps.size, bapps.source, bapps.synthetic, bapps.note)


def _key(path: Path) -> str:
    return f"{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"


def _file_stamp(path: Path) -> Dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


class _Sweep:
    """One process's share of a sweep: settings, the device data set, the done records."""

    def __init__(self, data: Bapps, distances: Sequence[str], out: Path, device: torch.device, precision: str,
                 backend: str, batch_size: int, lin: Optional[str] = None):
        self.data, self.distances, self.out, self.device = data, tuple(distances), out, device
        self.precision, self.backend, self.batch_size, self.lin = precision, backend, batch_size, lin
        self.settings = {"data": data.source, "synthetic": data.synthetic, "size": data.size, "distances": list(distances),
                         "precision": precision,
                         "triplets": sum(len(p) for p in data.parts.values() if p.task == "2afc"),
                         "jnd_pairs": sum(len(p) for p in data.parts.values() if p.task == "jnd"), "lin": lin}

    def done(self, path: Path) -> Optional[Dict[str, Any]]:
        """The stored record of ``path`` if it is complete and still valid, else None."""
        f = self.out / DONE_DIR / f"{_key(path)}.json"
        if not f.is_file():
            return None
        record = json.loads(f.read_text())
        ok = record.get("status") == "ok" and _same_settings(record.get("settings"), self.settings)
        if not (ok and record.get("file") == _file_stamp(path)):
            return None
        record.setdefault("ps_per_layer", None)  # an older sweep's record: these columns stay empty
        record.setdefault("jnd_map", None)
        return record

    def score(self, path: Path, loaded: "Future[Tuple[nn.Module, Dict[str, Any]]]") -> Dict[str, Any]:
        """Scores one checkpoint (its load already submitted) and writes its record atomically."""
        record: Dict[str, Any] = {"checkpoint": str(path), "settings": self.settings, "file": _file_stamp(path)}
        start = time.perf_counter()
        try:
            module, info = loaded.result()
            scorer = Scorer(module, distances=self.distances, device=self.device, precision=self.precision,
                            backend=self.backend, lin=self.lin)
            # one trunk pass per 2afc/val triplet gives the per-layer terms and their sum; jnd/val pairs, if any, one more
            result = evaluate_bapps(self.data, scorer, per_layer=True, batch_size=self.batch_size, progress=False)
            part = result.parts["2afc/val"]
            jnd = result.parts.get("jnd/val")
            record.update(status="ok", trunk=trunk_name(module), config=info.get("config"), step=info.get("step"),
                          epoch=info.get("epoch"), val_top1=info.get("val_top1"),
                          hyperparameters=info.get("hyperparameters"),
                          two_afc={d: dict(zip(part.categories, part.scores[d])) for d in self.distances},
                          ps=dict(part.summary), ps_per_layer={d: part.layer_summary[d] for d in self.distances},
                          jnd_map=dict(jnd.summary) if jnd is not None else None)
        except Exception as err:  # noqa: BLE001 - any failure of one checkpoint is reported, the sweep goes on
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            record.update(status="error", error=f"{type(err).__name__}: {first}")
        record["seconds"] = time.perf_counter() - start
        write_text_atomically(self.out / DONE_DIR / f"{_key(path)}.json", json.dumps(record, indent=1))
        return record


def run_sweep(checkpoints: Sequence[str], data: os.PathLike, distances: Sequence[str], out_dir: os.PathLike,
              device: Optional[str] = None, precision: str = "fp32", backend: str = "auto",
              batch_size: Optional[int] = None, progress: bool = True, lin: Optional[str] = None) -> List[Dict[str, Any]]:
    """Scores every checkpoint in ``checkpoints`` (files, folders, globs) on the BAPPS 2afc/val set ``data``
    (PS and per-category 2AFC of each distance, and PS of each layer's term alone, all from one trunk pass
    per triplet) and, where ``data`` has a jnd/val part, JND mAP of each distance.

    lin: the weights of lpips or dists, as ``Scorer(lin=...)`` takes them by name or path (``"lpips"``,
    ``"dists"`` for ``dists_vgg16`` checkpoints, a file); every checkpoint's taps must fit them.

    device: default ``cuda`` when CUDA is available (``cuda`` means ``cuda:<LOCAL_RANK>``), else CPU.
    batch_size: triplets per trunk pass; default 32 on CPU (96 images: ~30% faster than 128 triplets
    for ResNet-50 on a 2-core CPU, bench/README.md) and 128 on CUDA. Returns every checkpoint's
    record in path order (on rank 0 of a distributed run; other ranks return their own share) and
    writes ``OUT/results.jsonl`` and ``OUT/results.csv`` (rank 0).
    """
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(f"cuda:{local}" if device == "cuda" else device)
    rank, world = rank_and_world(dev)
    batch_size = batch_size or (128 if dev.type == "cuda" else 32)
    paths = expand_checkpoints(checkpoints)
    mine = paths[rank::world]
    out = Path(out_dir)
    sweep = _Sweep(device_bapps(data, dev, progress=progress and rank == 0), distances, out, dev, precision, backend,
                   batch_size, None if lin is None else str(lin))
    records = {p: sweep.done(p) for p in mine}
    todo = [p for p in mine if records[p] is None]
    bar = Progress(len(todo), f"sweep rank {rank}/{world}" if world > 1 else "sweep", "checkpoints", enabled=progress)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pf-sweep-load") as loader:
        pending = loader.submit(load_checkpoint, todo[0]) if todo else None
        for i, path in enumerate(todo):
            current = pending
            pending = loader.submit(load_checkpoint, todo[i + 1]) if i + 1 < len(todo) else None  # overlaps the scoring below
            records[path] = sweep.score(path, current)
            bar.update(1)
    gathered: List[Dict[str, Any]] = [records[p] for p in mine]
    if world > 1:
        shares: List[Optional[List[Dict[str, Any]]]] = [None] * world
        dist.gather_object(gathered, shares if rank == 0 else None, dst=0)
        if rank != 0:
            return gathered
        gathered = [r for share in shares for r in (share or [])]
    ordered = sorted(gathered, key=lambda r: r["checkpoint"])
    write_results(ordered, out)
    return ordered
