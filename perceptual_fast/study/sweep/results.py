"""A sweep's results: ``results.jsonl`` (one record per checkpoint) and ``results.csv`` (one row per checkpoint:
trunk, step, epoch, val_top1, PS, PS per layer, JND mAP and per-category 2AFC for every distance, config), written
atomically; reading them back (records of older sweeps lack ``ps_per_layer`` and ``jnd_map``: read as None); the
table for people."""

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


def _layers(records: Sequence[Dict[str, Any]], distances: Sequence[str]) -> Dict[str, int]:
    """distance -> the most layers any record has per-layer PS for (0 for records of older sweeps)."""
    return {d: max([len((r.get("ps_per_layer") or {}).get(d) or []) for r in records] or [0]) for d in distances}


def _layer_ps(r: Dict[str, Any], d: str, layer: int) -> Any:
    values = (r.get("ps_per_layer") or {}).get(d) or []
    return values[layer] if layer < len(values) else None


def csv_text(records: Sequence[Dict[str, Any]]) -> str:
    """One CSV row per checkpoint: identity, training record, PS, PS of each layer (``ps_<d>_l<i>``), JND mAP
    (``jnd_map_<d>``, x100, mean over categories; empty without jnd data) and per-category 2AFC per distance.
    Cells a record lacks (an older sweep's, an error's) are empty."""
    distances, categories = _columns(records)
    layers = _layers(records, distances)
    header = ["checkpoint", "status", "trunk", "step", "epoch", "val_top1",
              *(f"ps_{d}" for d in distances),
              *(f"ps_{d}_l{i}" for d in distances for i in range(layers[d])),
              *(f"jnd_map_{d}" for d in distances),
              *(f"2afc_{d}_{c}" for d in distances for c in categories[d]), "config", "hyperparameters", "error"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for r in records:
        cells = [r["checkpoint"], r["status"], r.get("trunk", ""), r.get("step"), r.get("epoch"), r.get("val_top1"),
                 *(r.get("ps", {}).get(d) for d in distances),
                 *(_layer_ps(r, d, i) for d in distances for i in range(layers[d])),
                 *((r.get("jnd_map") or {}).get(d) for d in distances),
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
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in records:  # written by an older sweep: no per-layer PS, no JND mAP
        if r.get("status") == "ok":
            r.setdefault("ps_per_layer", None)
            r.setdefault("jnd_map", None)
    return records


def _or_dash(v: Any) -> Any:
    return "-" if v is None else v


def format_results(records: Sequence[Dict[str, Any]]) -> str:
    """A table for people: one row per checkpoint, PS of each distance (and JND mAP where scored), errors
    spelled out."""
    distances, _ = _columns(records)
    jnd = [d for d in distances if any((r.get("jnd_map") or {}).get(d) is not None for r in records)]
    common = os.path.commonpath([r["checkpoint"] for r in records]) if len(records) > 1 else ""
    rows = []
    for r in records:
        name = os.path.relpath(r["checkpoint"], common) if common else Path(r["checkpoint"]).name
        acc = r.get("val_top1")
        rows.append([name, r.get("trunk", "-"), r.get("step") if r.get("step") is not None else "-",
                     100 * acc if acc is not None else "-",
                     *((r["ps"][d] if r["status"] == "ok" else "-") for d in distances),
                     *(_or_dash((r.get("jnd_map") or {}).get(d)) for d in jnd), r["status"]])
    table = format_table(["checkpoint", "trunk", "step", "top-1 %", *(f"PS {d}" for d in distances),
                          *(f"JND {d}" for d in jnd), "status"], rows, floatfmt=".2f")
    errors = [f"  {r['checkpoint']}: {r['error']}" for r in records if r["status"] != "ok"]
    return table + ("\n\nfailed (skipped; rerun to retry):\n" + "\n".join(errors) if errors else "")
