"""Packed BAPPS: decode the PNGs once into one safetensors file, then memory-map it.

Tensors, for each part ``<task>/<split>`` (e.g. ``2afc/val``):
  ``<part>/<folder>``  uint8 ``[N, S, S, 3]`` NHWC images (``ref``, ``p0``, ``p1``)
  ``<part>/target``    float32 ``[N]`` (``judge`` for 2afc, ``same`` for jnd)
  ``<part>/category``  int64 ``[N]``
Metadata (strings): ``format``, ``format_version``, ``size``, ``synthetic``, ``note``, ``source``,
``parts`` (JSON: categories and source file stems of every part) and ``content_hash`` (SHA-256
of every tensor and of ``parts``), checked when the pack is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..util.atomic import write_atomically
from ..util.progress import Progress
from .reader import TASKS, Bapps, BappsPart, parse_splits, read_bapps

FORMAT = "perceptual_fast.bapps"
FORMAT_VERSION = "1"
REPACK = "re-create it with `perceptual-fast pack DATASET_DIR -o FILE`"


def content_hash(tensors: Mapping[str, Tensor], parts_json: str, progress: Optional[Progress] = None) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes, in name order) and the parts JSON."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
        if progress is not None:
            progress.update(t.numel() * t.element_size())
    h.update(parts_json.encode())
    return h.hexdigest()


def _parts_json(data: Bapps) -> str:
    return json.dumps({k: {"categories": list(p.categories), "names": list(p.names)} for k, p in data.parts.items()},
                      sort_keys=True)


def write_pack(data: Bapps, out: os.PathLike) -> Path:
    """Writes ``data`` to the safetensors pack ``out`` atomically (a temp file, then a rename)."""
    out = Path(out)
    tensors: Dict[str, Tensor] = {}
    for key, part in data.parts.items():
        tensors.update({f"{key}/{d}": v.contiguous() for d, v in part.images.items()})
        tensors[f"{key}/target"] = part.target.to(torch.float32).contiguous()
        tensors[f"{key}/category"] = part.category.to(torch.int64).contiguous()
    parts_json = _parts_json(data)
    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "size": str(data.size), "synthetic": str(data.synthetic).lower(),
        "note": data.note, "source": data.source, "parts": parts_json, "content_hash": content_hash(tensors, parts_json),
    }
    return write_atomically(out, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def pack_folder(root: os.PathLike, out: os.PathLike, size: int = 64, splits: Sequence[str] = ("val",),
                workers: Optional[int] = None, progress: bool = True) -> Path:
    """Reads the BAPPS folder ``root`` (all cores decoding) and writes it as the pack ``out``."""
    return write_pack(read_bapps(root, size=size, splits=splits, workers=workers, progress=progress), out)


def load_pack(path: os.PathLike, verify: bool = True, progress: bool = False) -> Bapps:
    """Memory-maps the pack ``path``; ``verify`` checks the content hash (reads every byte once).

    A missing, truncated, corrupted or foreign file, or one from another format version, is a
    ValueError that says so and how to re-create it.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such pack: {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"cannot read pack {str(path)!r} (truncated or not a safetensors file: {err}); {REPACK}") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is a safetensors file but not a perceptual_fast BAPPS pack; {REPACK}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"pack {str(path)!r} has format version {meta.get('format_version')!r}; this perceptual_fast reads version "
            f"{FORMAT_VERSION!r}: {REPACK}"
        )
    try:
        parts_info = json.loads(meta["parts"])
        size = int(meta["size"])
    except (KeyError, ValueError) as err:
        raise ValueError(f"pack {str(path)!r} has damaged metadata ({err}); {REPACK}") from err
    if verify:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        bar = Progress(total, f"checking {path.name}", "bytes", enabled=progress)
        if content_hash(tensors, meta["parts"], bar) != meta.get("content_hash"):
            raise ValueError(f"pack {str(path)!r} is corrupted: its content does not match the recorded hash; {REPACK}")
    parts = {}
    for key, info in parts_info.items():
        task, split = key.split("/")
        try:
            parts[key] = BappsPart(
                task, split, {d: tensors[f"{key}/{d}"] for d in TASKS[task][0]}, tensors[f"{key}/target"],
                tensors[f"{key}/category"], tuple(info["categories"]), tuple(info["names"]),
            )
        except KeyError as err:
            raise ValueError(f"pack {str(path)!r} lacks tensor {err} of part {key}; {REPACK}") from err
    return Bapps(parts, size, str(path), synthetic=meta.get("synthetic") == "true", note=meta.get("note", ""))


def load_bapps(data: os.PathLike, size: Optional[int] = None, splits: Sequence[str] = ("val",), verify: bool = True,
               progress: bool = True) -> Bapps:
    """A BAPPS folder (read and decoded, ``size`` default 64) or a pack (memory-mapped; ``size``, if
    given, must match it), restricted to ``splits``."""
    wanted = parse_splits(splits)
    if not Path(data).is_file():
        return read_bapps(data, size=size or 64, splits=wanted, progress=progress)
    bapps = load_pack(data, verify=verify, progress=progress)
    if size is not None and size != bapps.size:
        raise ValueError(f"pack {str(data)!r} holds {bapps.size}x{bapps.size} images, not {size}x{size}: "
                         f"drop --size or pack the folder again with --size {size}")
    bapps.parts = {k: p for k, p in bapps.parts.items() if p.split in wanted}
    if not bapps.parts:
        raise ValueError(f"pack {str(data)!r} holds no {'/'.join(wanted)} split; pack the folder with --split {','.join(wanted)}")
    return bapps
