"""Result rows of a long scoring run, written as they come: CSV and/or JSONL, appended and flushed
after every batch, so a killed run (even by SIGKILL) keeps every row written before the batch in
flight, and ``--resume`` can skip the pairs already there.

A row: ``name``, ``a``, ``b`` (the image paths), one column per distance, with ``per_layer`` one
per distance and layer (``spatial[0]`` ...), and ``error`` (empty when the pair scored).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

from .atomic import write_atomically


def row_columns(distances: Sequence[str], layers: Optional[int]) -> List[str]:
    """The CSV columns, in order; ``layers`` is the number of per-layer terms, or None for totals only."""
    cols = ["name", "a", "b", *distances]
    if layers is not None:
        cols += [f"{d}[{layer}]" for d in distances for layer in range(layers)]
    return cols + ["error"]


def _cut_partial_last_line(path: Path) -> None:
    """A kill mid-write can leave half a row at the end: drop it (it is rescored on resume)."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def names_in(path: Path, jsonl: bool, repair: bool = True) -> Set[str]:
    """The pair names already in a CSV (or, with ``jsonl``, JSONL) results file; with ``repair`` its
    partial last line is dropped from the file first (only for a file this process owns), else it is
    only ignored."""
    if not path.exists() or path.stat().st_size == 0:
        return set()
    if repair:
        _cut_partial_last_line(path)
    return {str(row["name"]) for row in _read_rows(path, jsonl)}


def part_path(path: Path, rank: int) -> Path:
    """Where rank ``rank`` of a torchrun job writes its share of ``path``."""
    return path.with_name(f"{path.name}.rank{rank}.part")


def _read_rows(path: Path, jsonl: bool) -> List[Dict[str, object]]:
    """The whole rows of a CSV file (dicts of strings) or a JSONL file (decoded objects): a partial
    last line (a write cut short) is left out."""
    text = path.read_text()
    whole = text[: text.rfind("\n") + 1]
    if jsonl:
        return [json.loads(line) for line in whole.splitlines() if line.strip()]
    return list(csv.DictReader(io.StringIO(whole)))


def merge_parts(path: Path, parts: Sequence[Path], order: Sequence[str], jsonl: bool, keep_existing: bool,
                columns: Sequence[str]) -> None:
    """Rank 0 of a torchrun job: the rows of every part file (and, with ``keep_existing``, those already
    in ``path``), one per name (the first seen), in ``order`` (input order; other names after), written
    to ``path`` atomically (a CSV with the header ``columns``); the part files are then removed."""
    rows: Dict[str, Dict[str, object]] = {}
    for source in ([path] if keep_existing else []) + list(parts):
        if source.exists() and source.stat().st_size:
            for row in _read_rows(source, jsonl):
                rows.setdefault(str(row["name"]), row)
    rank = {name: i for i, name in enumerate(order)}
    ordered = sorted(rows.values(), key=lambda r: (rank.get(str(r["name"]), len(rank)), str(r["name"])))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="" if not jsonl else None) as f:
            if jsonl:
                f.write("".join(json.dumps(r) + "\n" for r in ordered))
            else:
                w = csv.DictWriter(f, fieldnames=list(columns))
                w.writeheader()
                w.writerows(ordered)

    write_atomically(path, write)
    for part in parts:
        part.unlink(missing_ok=True)


class RowWriter:
    """Appends rows to ``csv_path`` and/or ``jsonl_path`` (either may be None), flushed per ``write``.

    A new (or, with ``resume``, an empty) CSV file gets the header; resuming onto a CSV whose header
    differs (other distances or --per-layer) is an error that says so.
    """

    def __init__(self, csv_path: Optional[Path], jsonl_path: Optional[Path], distances: Sequence[str],
                 layers: Optional[int], resume: bool):
        self.distances, self.layers = list(distances), layers
        self.columns = row_columns(distances, layers)
        self.files = []
        self.csv = self.jsonl = None
        for path, kind in ((csv_path, "csv"), (jsonl_path, "jsonl")):
            if path is None:
                continue
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            appending = resume and path.exists() and path.stat().st_size > 0
            if appending and kind == "csv":
                with open(path, newline="") as f:
                    header = next(csv.reader(f), [])
                if header != self.columns:
                    raise ValueError(f"--resume: {str(path)!r} has columns {header}, this run writes {self.columns} "
                                     "(same --distance and --per-layer as the first run, or a new file)")
            f = open(path, "a" if appending else "w", newline="" if kind == "csv" else None)
            self.files.append(f)
            if kind == "csv":
                self.csv = csv.DictWriter(f, fieldnames=self.columns)
                if not appending:
                    self.csv.writeheader()
            else:
                self.jsonl = f

    def write(self, rows: List[Dict[str, object]]) -> None:
        """Appends ``rows`` (name, a, b, {distance: float or [per-layer floats]}, error) and flushes."""
        if self.csv is not None:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=self.columns)
            for row in rows:
                writer.writerow(self._flat(row))
            self.files[0].write(buf.getvalue())  # one write per batch
        if self.jsonl is not None:
            self.jsonl.write("".join(json.dumps(row) + "\n" for row in rows))
        for f in self.files:
            f.flush()
            os.fsync(f.fileno())

    def _flat(self, row: Dict[str, object]) -> Dict[str, object]:
        flat = {k: row.get(k, "") for k in ("name", "a", "b", "error")}
        for d in self.distances:
            value = row.get(d)
            if isinstance(value, list):
                flat[d] = sum(value)
                flat.update({f"{d}[{layer}]": v for layer, v in enumerate(value)})
            else:
                flat[d] = "" if value is None else value
        return flat

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
