"""Scoring many checkpoints on BAPPS 2AFC: one results table, resumable, across processes.

    records = run_sweep(["runs/*/step*.safetensors"], "bapps.safetensors", ("spatial", "meanpool", "style"), "sweep/")

* The BAPPS 2afc/val images are read once (pack memory map or folder) and copied to the device
  once, as uint8; every checkpoint is scored on those same tensors.
* A background thread reads and builds the next checkpoint's trunk while the current one is scored.
* Each checkpoint's result is written atomically to ``OUT/done/<key>.json`` when it is done; a rerun
  skips checkpoints whose file (size, mtime) and settings (data, distances, precision) are unchanged,
  so a kill loses at most the checkpoint in flight. A checkpoint that cannot be loaded or scored is
  recorded with ``status: error`` and its message (retried on a rerun); the sweep goes on.
* Under ``torchrun`` (torch.distributed: gloo on CPU, NCCL on GPUs) rank r scores checkpoints
  r, r + W, r + 2W, ... of the sorted list; rank 0 gathers every record and writes the table.
* The table: ``OUT/results.jsonl`` (one record per checkpoint) and ``OUT/results.csv`` (one row per
  checkpoint: trunk, step, epoch, val_top1, PS and per-category 2AFC for every distance, config).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .atomic import write_text_atomically
from .bapps_eval import evaluate_bapps
from .data.bapps import Bapps, BappsPart
from .data.pack import load_bapps
from .progress import Progress
from .report import format_table
from .scorer import Scorer
from .train import STATE_FILE, TRAIN_KEY
from .trunks import load_trunk, trunk_name
from .trunks.checkpoint import CONFIG_KEY

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ts", ".jit")
RESULTS_JSONL, RESULTS_CSV, DONE_DIR = "results.jsonl", "results.csv", "done"


def expand_checkpoints(specs: Sequence[str]) -> List[Path]:
    """Files, folders (their checkpoint files, recursively, less training states) and glob patterns -> sorted
    unique paths.

    A spec that matches nothing is an error naming it.
    """
    found: List[Path] = []
    for spec in specs:
        if any(c in spec for c in "*?["):
            matches = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
        elif Path(spec).is_dir():
            matches = [p for p in Path(spec).rglob("*")
                       if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES and p.name != STATE_FILE]
        else:
            matches = [Path(spec)] if Path(spec).is_file() else []
        if not matches:
            raise ValueError(f"no checkpoint matches {spec!r} (give files, folders or glob patterns of "
                             f"{', '.join(CHECKPOINT_SUFFIXES)} files)")
        found += matches
    return sorted({p.resolve() for p in found})


def device_bapps(data: os.PathLike, device: torch.device, progress: bool = True) -> Bapps:
    """The 2afc/val part of a BAPPS pack or folder, its images copied once to ``device`` (uint8 NHWC)."""
    bapps = load_bapps(data, splits=("val",), progress=progress)
    parts = {k: p for k, p in bapps.parts.items() if p.task == "2afc"}
    if not parts:
        raise ValueError(f"{str(data)!r} holds no 2afc/val part; the sweep scores BAPPS 2AFC triplets")
    moved = {k: BappsPart(p.task, p.split, {d: v.to(device, copy=True) for d, v in p.images.items()}, p.target.clone(),
                          p.category.clone(), p.categories, p.names) for k, p in parts.items()}
    return Bapps(moved, bapps.size, bapps.source, bapps.synthetic, bapps.note)


def checkpoint_info(path: Path) -> Dict[str, Any]:
    """What a checkpoint file says of itself without loading its tensors: trunk config and training
    record (step, epoch, val_top1, hyperparameters) from safetensors metadata; {} when it says nothing."""
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
    info = json.loads(meta[TRAIN_KEY]) if TRAIN_KEY in meta else {}
    if CONFIG_KEY in meta:
        info["config"] = json.loads(meta[CONFIG_KEY])
    return info


def _load(path: Path) -> Tuple[nn.Module, Dict[str, Any]]:
    """Reads and builds one checkpoint's trunk (taps only) and its self-description."""
    module = load_trunk(path, head=False)  # first: its errors name the file and what is wrong with it
    info = checkpoint_info(path)
    if "config" not in info and getattr(module, "trunk_config", ""):
        info["config"] = json.loads(module.trunk_config)
    return module, info


def _key(path: Path) -> str:
    return f"{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"


def _file_stamp(path: Path) -> Dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


class _Sweep:
    """One process's share of a sweep: settings, the device data set, the done records."""

    def __init__(self, data: Bapps, distances: Sequence[str], out: Path, device: torch.device, precision: str,
                 backend: str, batch_size: int):
        self.data, self.distances, self.out, self.device = data, tuple(distances), out, device
        self.precision, self.backend, self.batch_size = precision, backend, batch_size
        self.settings = {"data": data.source, "synthetic": data.synthetic, "size": data.size, "distances": list(distances),
                         "precision": precision,
                         "triplets": sum(len(p) for p in data.parts.values())}

    def done(self, path: Path) -> Optional[Dict[str, Any]]:
        """The stored record of ``path`` if it is complete and still valid, else None."""
        f = self.out / DONE_DIR / f"{_key(path)}.json"
        if not f.is_file():
            return None
        record = json.loads(f.read_text())
        ok = record.get("status") == "ok" and record.get("settings") == self.settings
        return record if ok and record.get("file") == _file_stamp(path) else None

    def score(self, path: Path, loaded: "Future[Tuple[nn.Module, Dict[str, Any]]]") -> Dict[str, Any]:
        """Scores one checkpoint (its load already submitted) and writes its record atomically."""
        record: Dict[str, Any] = {"checkpoint": str(path), "settings": self.settings, "file": _file_stamp(path)}
        start = time.perf_counter()
        try:
            module, info = loaded.result()
            scorer = Scorer(module, distances=self.distances, device=self.device, precision=self.precision,
                            backend=self.backend)
            result = evaluate_bapps(self.data, scorer, batch_size=self.batch_size, progress=False)
            part = result.parts["2afc/val"]
            record.update(status="ok", trunk=trunk_name(module), config=info.get("config"), step=info.get("step"),
                          epoch=info.get("epoch"), val_top1=info.get("val_top1"),
                          hyperparameters=info.get("hyperparameters"),
                          two_afc={d: dict(zip(part.categories, part.scores[d])) for d in self.distances},
                          ps=dict(part.summary))
        except Exception as err:  # noqa: BLE001 - any failure of one checkpoint is reported, the sweep goes on
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            record.update(status="error", error=f"{type(err).__name__}: {first}")
        record["seconds"] = time.perf_counter() - start
        write_text_atomically(self.out / DONE_DIR / f"{_key(path)}.json", json.dumps(record, indent=1))
        return record


def _distributed(device: torch.device) -> Tuple[int, int]:
    """(rank, world size): initialises torch.distributed (NCCL for CUDA devices, else gloo) when
    launched by torchrun (WORLD_SIZE > 1)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def run_sweep(checkpoints: Sequence[str], data: os.PathLike, distances: Sequence[str], out_dir: os.PathLike,
              device: Optional[str] = None, precision: str = "fp32", backend: str = "auto",
              batch_size: Optional[int] = None, progress: bool = True) -> List[Dict[str, Any]]:
    """Scores every checkpoint in ``checkpoints`` (files, folders, globs) on the BAPPS 2afc/val set ``data``.

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
    rank, world = _distributed(dev)
    batch_size = batch_size or (128 if dev.type == "cuda" else 32)
    paths = expand_checkpoints(checkpoints)
    mine = paths[rank::world]
    out = Path(out_dir)
    sweep = _Sweep(device_bapps(data, dev, progress=progress and rank == 0), distances, out, dev, precision, backend,
                   batch_size)
    records = {p: sweep.done(p) for p in mine}
    todo = [p for p in mine if records[p] is None]
    bar = Progress(len(todo), f"sweep rank {rank}/{world}" if world > 1 else "sweep", "checkpoints", enabled=progress)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pf-sweep-load") as loader:
        pending = loader.submit(_load, todo[0]) if todo else None
        for i, path in enumerate(todo):
            current = pending
            pending = loader.submit(_load, todo[i + 1]) if i + 1 < len(todo) else None  # overlaps the scoring below
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


def _columns(records: Sequence[Dict[str, Any]]) -> Tuple[List[str], Dict[str, List[str]]]:
    distances: List[str] = []
    categories: Dict[str, List[str]] = {}
    for r in records:
        for d, cats in r.get("two_afc", {}).items():
            if d not in categories:
                distances.append(d)
                categories[d] = []
            categories[d] += [c for c in cats if c not in categories[d]]
    return distances, categories


def csv_text(records: Sequence[Dict[str, Any]]) -> str:
    """One CSV row per checkpoint: identity, training record, PS and per-category 2AFC per distance."""
    distances, categories = _columns(records)
    header = ["checkpoint", "status", "trunk", "step", "epoch", "val_top1",
              *(f"ps_{d}" for d in distances),
              *(f"2afc_{d}_{c}" for d in distances for c in categories[d]), "config", "hyperparameters", "error"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for r in records:
        cells = [r["checkpoint"], r["status"], r.get("trunk", ""), r.get("step"), r.get("epoch"), r.get("val_top1"),
                 *(r.get("ps", {}).get(d) for d in distances),
                 *(r.get("two_afc", {}).get(d, {}).get(c) for d in distances for c in categories[d]),
                 json.dumps(r.get("config"), sort_keys=True) if r.get("config") else "",
                 json.dumps(r.get("hyperparameters"), sort_keys=True) if r.get("hyperparameters") else "",
                 r.get("error", "")]
        writer.writerow(["" if v is None else v for v in cells])
    return buf.getvalue()


def write_results(records: Sequence[Dict[str, Any]], out: Path) -> None:
    """``results.jsonl`` and ``results.csv`` in ``out``, each written atomically."""
    write_text_atomically(out / RESULTS_JSONL, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    write_text_atomically(out / RESULTS_CSV, csv_text(records))


def read_results(path: os.PathLike) -> List[Dict[str, Any]]:
    """Records of a sweep: its ``results.jsonl`` (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_JSONL
    if not path.is_file():
        raise ValueError(f"no sweep results at {str(path)!r}: give a sweep's output folder or its {RESULTS_JSONL}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_results(records: Sequence[Dict[str, Any]]) -> str:
    """A table for people: one row per checkpoint, PS of each distance, errors spelled out."""
    distances, _ = _columns(records)
    common = os.path.commonpath([r["checkpoint"] for r in records]) if len(records) > 1 else ""
    rows = []
    for r in records:
        name = os.path.relpath(r["checkpoint"], common) if common else Path(r["checkpoint"]).name
        acc = r.get("val_top1")
        rows.append([name, r.get("trunk", "-"), r.get("step") if r.get("step") is not None else "-",
                     100 * acc if acc is not None else "-",
                     *((r["ps"][d] if r["status"] == "ok" else "-") for d in distances), r["status"]])
    table = format_table(["checkpoint", "trunk", "step", "top-1 %", *(f"PS {d}" for d in distances), "status"], rows,
                         floatfmt=".2f")
    errors = [f"  {r['checkpoint']}: {r['error']}" for r in records if r["status"] != "ok"]
    return table + ("\n\nfailed (skipped; rerun to retry):\n" + "\n".join(errors) if errors else "")
