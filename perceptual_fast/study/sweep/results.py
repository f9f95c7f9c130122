"""A sweep's results: ``results.jsonl`` (one record per checkpoint) and ``results.csv`` (one row per checkpoint:
trunk, step, epoch, val_top1, PS and per-category 2AFC for every distance, config), written atomically; reading
them back; the table for people."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from ...util.atomic import write_text_atomically
from ...util.tables import format_table

RESULTS_JSONL, RESULTS_CSV = "results.jsonl", "results.csv"


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
