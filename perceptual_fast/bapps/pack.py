"""Packed BAPPS: decode the PNGs once into one safetensors file, then memory-map it.

Tensors, for each part ``<task>/<split>`` (e.g. ``2afc/val``):
  ``<part>/<folder>``  uint8 ``[N, S, S, 3]`` NHWC images (``ref``, ``p0``, ``p1``)
  ``<part>/target``    float32 ``[N]`` (``judge`` for 2afc, ``same`` for jnd)
  ``<part>/category``  int64 ``[N]``
Metadata (strings): ``format``, ``format_version``, ``size``, ``synthetic``, ``note``, ``source``,
``parts`` (JSON: categories and source file stems of every part) and ``content_hash`` (SHA-256
of every tensor and of ``parts``), checked when the pack is loaded.

A pack is written as a stream: the safetensors header first (every tensor's shape is known from the
folder's listing), then each tensor's bytes in name order, images decoded batch by batch as they
are written, the hash updated as they go; the header is rewritten with the hash at the end (its
length does not change). Memory holds a few batches whatever the data set's size.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from ..util.atomic import write_atomically
from ..util.progress import Progress
from .reader import TASKS, Bapps, BappsPart, ImageSource, parse_splits, read_bapps

FORMAT = "perceptual_fast.bapps"
FORMAT_VERSION = "1"
REPACK = "re-create it with `perceptual-fast pack DATASET_DIR -o FILE`"


def _hash_prefix(name: str, dtype: torch.dtype, shape: Sequence[int]) -> bytes:
    return f"{name}|{dtype}|{tuple(shape)}|".encode()


def content_hash(tensors: Mapping[str, Tensor], parts_json: str, progress: Optional[Progress] = None) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes, in name order) and the parts JSON."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(_hash_prefix(name, t.dtype, t.shape))
        h.update(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
        if progress is not None:
            progress.update(t.numel() * t.element_size())
    h.update(parts_json.encode())
    return h.hexdigest()


def _parts_json(data: Bapps) -> str:
    return json.dumps({k: {"categories": list(p.categories), "names": list(p.names)} for k, p in data.parts.items()},
                      sort_keys=True)


# safetensors dtype codes of the tensors a pack holds
_SAFETENSORS_DTYPE = {torch.uint8: "U8", torch.float32: "F32", torch.int64: "I64"}
_IMAGE_BATCH = 256  # images decoded per write while packing a folder


def _pack_tensors(data: Bapps) -> Dict[str, Tuple[torch.dtype, Tuple[int, ...], Tuple[BappsPart, str]]]:
    """name -> (dtype, shape, (part, what)): what the pack will hold, with where each tensor comes from
    (``what``: an image folder, ``target`` or ``category``)."""
    out = {}
    for key, part in data.parts.items():
        for d, v in part.images.items():
            out[f"{key}/{d}"] = (torch.uint8, tuple(v.shape), (part, d))
        out[f"{key}/target"] = (torch.float32, (len(part),), (part, "target"))
        out[f"{key}/category"] = (torch.int64, (len(part),), (part, "category"))
    return out


def _chunks(part: BappsPart, what: str, workers: Optional[int]) -> Iterator[Tensor]:
    """The tensor ``what`` of ``part`` in consecutive contiguous pieces (images decoded batch by batch)."""
    if what in ("target", "category"):
        yield getattr(part, what).to(torch.float32 if what == "target" else torch.int64).contiguous()
        return
    source: ImageSource = part.images[what]
    if isinstance(source, Tensor):
        yield source.contiguous()
        return
    for _, batch in replace(part, images={what: source}).batches(_IMAGE_BATCH, workers):
        yield batch[what].permute(0, 2, 3, 1).contiguous()


def _header(plan: Mapping[str, Tuple[torch.dtype, Tuple[int, ...], object]], metadata: Mapping[str, str]) -> bytes:
    """The safetensors header (length prefix and JSON, space-padded to 8 bytes), tensors in name order."""
    entries, offset = {}, 0
    for name in sorted(plan):
        dtype, shape, _ = plan[name]
        nbytes = int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
        entries[name] = {"dtype": _SAFETENSORS_DTYPE[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps({"__metadata__": dict(metadata), **entries}, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _write_stream(f: BinaryIO, data: Bapps, metadata: Dict[str, str], workers: Optional[int], bar: Progress) -> None:
    plan = _pack_tensors(data)
    pending_hash = "0" * 64  # same length as the real one: the header is rewritten in place at the end
    f.write(_header(plan, {**metadata, "content_hash": pending_hash}))
    h = hashlib.sha256()
    for name in sorted(plan):
        dtype, shape, (part, what) = plan[name]
        h.update(_hash_prefix(name, dtype, shape))
        for chunk in _chunks(part, what, workers):
            raw = memoryview(chunk.view(torch.uint8).reshape(-1).numpy())
            h.update(raw)
            f.write(raw)
            if dtype == torch.uint8:
                bar.update(chunk.shape[0])
    h.update(metadata["parts"].encode())
    f.seek(0)
    f.write(_header(plan, {**metadata, "content_hash": h.hexdigest()}))
    f.flush()
    os.fsync(f.fileno())


def write_pack(data: Bapps, out: os.PathLike, workers: Optional[int] = None, progress: bool = False) -> Path:
    """Writes ``data`` (in memory or still on disk) to the safetensors pack ``out``, streamed (module
    docstring), atomically (a temp file, then a rename). workers: decoding threads (default: all cores)."""
    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "size": str(data.size), "synthetic": str(data.synthetic).lower(),
        "note": data.note, "source": data.source, "parts": _parts_json(data),
    }
    images = sum(len(p) * len(p.images) for p in data.parts.values())
    bar = Progress(images, f"packing {data.source}", "images", enabled=progress)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            _write_stream(f, data, metadata, workers, bar)

    return write_atomically(out, write)


def pack_folder(root: os.PathLike, out: os.PathLike, size: int = 64, splits: Sequence[str] = ("val",),
                workers: Optional[int] = None, progress: bool = True) -> Path:
    """Writes the BAPPS folder ``root`` as the pack ``out``, decoding as it writes (all cores by default)."""
    return write_pack(read_bapps(root, size=size, splits=splits), out, workers=workers, progress=progress)


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
    """A BAPPS folder (listed, its images decoded as used; ``size`` default 64) or a pack (memory-mapped; ``size``, if
    given, must match it), restricted to ``splits``."""
    wanted = parse_splits(splits)
    if not Path(data).is_file():
        return read_bapps(data, size=size or 64, splits=wanted)
    bapps = load_pack(data, verify=verify, progress=progress)
    if size is not None and size != bapps.size:
        raise ValueError(f"pack {str(data)!r} holds {bapps.size}x{bapps.size} images, not {size}x{size}: "
                         f"drop --size or pack the folder again with --size {size}")
    bapps.parts = {k: p for k, p in bapps.parts.items() if p.split in wanted}
    if not bapps.parts:
        raise ValueError(f"pack {str(data)!r} holds no {'/'.join(wanted)} split; pack the folder with --split {','.join(wanted)}")
    return bapps
