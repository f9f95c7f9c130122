"""BAPPS evaluation: per-category 2AFC and PS for every distance from one trunk pass per image,
JND mAP when the jnd part is present, optional per-layer scores, low-level baselines beside them.

    data = load_bapps("bapps.safetensors")         # perceptual_fast.bapps.pack; or a BAPPS folder
    result = evaluate_bapps(data, pf.Scorer("alexnet", weights="random", distances=("spatial", "style")),
                            baselines=("l2", "ssim"), per_layer=True)
    print(result.format()); result.to_dict(); result.csv_rows()
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..metrics import category_means, jnd_map, perceptual_score, two_afc
from ..scorer import Scorer
from ..util.progress import Progress
from ..util.tables import format_table
from .baselines import baseline_distance
from .reader import TASKS, Bapps, BappsPart

CSV_HEADER = ("part", "distance", "layer", "category", "metric", "value", "n")


@dataclass
class PartResult:
    """Scores of one part (``2afc/val``, ``jnd/val``...).

    scores: distance -> one score per category (2AFC agreement in [0, 1], or JND mAP in [0, 1]).
    summary: distance -> PS (2afc: 100 x unweighted category mean) or 100 x mean mAP (jnd).
    layer_scores / layer_summary: the same for each layer's term alone (``per_layer``), per layer.
    distances: ``d0``/``d1`` (2afc) or ``d`` (jnd) -> distance -> ``[N]`` per-item distances
        (float32 deep, float64 baselines), in the part's item order; not written to JSON/CSV.
    """

    key: str
    task: str
    categories: List[str]
    counts: List[int]
    scores: Dict[str, List[float]] = field(default_factory=dict)
    summary: Dict[str, float] = field(default_factory=dict)
    layer_scores: Dict[str, List[List[float]]] = field(default_factory=dict)
    layer_summary: Dict[str, List[float]] = field(default_factory=dict)
    distances: Dict[str, Dict[str, Tensor]] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return "2afc" if self.task == "2afc" else "jnd_map"

    @property
    def summary_name(self) -> str:
        return "PS" if self.task == "2afc" else "mean"


@dataclass
class BappsResult:
    """Everything :func:`evaluate_bapps` measured; ``format()`` a table, ``to_dict()`` JSON, ``csv_rows()`` CSV."""

    source: str
    synthetic: bool
    note: str
    size: int
    model: Dict[str, str]
    distances: List[str]
    parts: Dict[str, PartResult]
    seconds: float
    items: int

    def to_dict(self) -> Dict[str, object]:
        parts = {}
        for key, p in self.parts.items():
            doc: Dict[str, object] = {"categories": p.categories, "counts": p.counts, p.metric: {
                d: dict(zip(p.categories, v)) for d, v in p.scores.items()}, "ps" if p.task == "2afc" else "map_mean_x100":
                p.summary}
            if p.layer_scores:
                doc[f"{p.metric}_per_layer"] = {d: [dict(zip(p.categories, v)) for v in layers]
                                                for d, layers in p.layer_scores.items()}
                doc[("ps" if p.task == "2afc" else "map_mean_x100") + "_per_layer"] = p.layer_summary
            parts[key] = doc
        return {"data": "SYNTHETIC" if self.synthetic else "BAPPS", "source": self.source, "note": self.note,
                "size": self.size, "model": self.model, "distances": self.distances, "parts": parts,
                "seconds": self.seconds, "items_per_second": self.items / self.seconds if self.seconds > 0 else None}

    def csv_rows(self) -> List[List[object]]:
        """Rows under :data:`CSV_HEADER`; ``layer`` is empty for the sum over layers."""
        rows: List[List[object]] = []
        for key, p in self.parts.items():
            summary_metric = "ps" if p.task == "2afc" else "jnd_map_mean_x100"
            for d in p.scores:
                per_layer = [(layer, s, p.layer_summary[d][layer]) for layer, s in enumerate(p.layer_scores.get(d, []))]
                for layer, scores, summary in [("", p.scores[d], p.summary[d]), *per_layer]:
                    rows += [[key, d, layer, c, p.metric, v, n] for c, v, n in zip(p.categories, scores, p.counts)]
                    rows.append([key, d, layer, p.summary_name, summary_metric, summary, sum(p.counts)])
        return rows

    def format(self) -> str:
        label = "SYNTHETIC data (not human judgements)" if self.synthetic else "BAPPS"
        lines = [f"{label}: {self.source}, {self.size}x{self.size}; " + ", ".join(f"{k} {v}" for k, v in self.model.items())]
        if self.synthetic and self.note:
            lines += [f"  {line}" for line in self.note.splitlines()[1:]]
        for key, p in self.parts.items():
            what = "2AFC x100 per category, PS" if p.task == "2afc" else "JND mAP x100 per category, mean"
            lines += ["", f"{key} ({sum(p.counts)} {'triplets' if p.task == '2afc' else 'pairs'}): {what}"]
            rows = []
            for d in p.scores:
                rows.append([d, *(100 * v for v in p.scores[d]), p.summary[d]])
                rows += [[f"{d}[{layer}]", *(100 * v for v in s), p.layer_summary[d][layer]]
                         for layer, s in enumerate(p.layer_scores.get(d, []))]
            lines.append(format_table(["distance", *p.categories, p.summary_name], rows, floatfmt=".2f"))
        rate = self.items / self.seconds if self.seconds > 0 else float("nan")
        lines += ["", f"scored {self.items} items in {self.seconds:.2f} s ({rate:.0f}/s, {torch.get_num_threads()} threads)"]
        return "\n".join(lines)


def _score_part(part: BappsPart, scorer: Optional[Scorer], baselines: Sequence[str], batch_size: int,
                bar: Progress) -> Dict[str, Dict[str, Tensor]]:
    """Per-item distances of one part: ``{"d0"/"d1"/"d": {name: [N] or [N, L] (deep, per layer)}}``."""
    image_dirs, _ = TASKS[part.task]
    sides = {"d0": ("ref", "p0"), "d1": ("ref", "p1")} if part.task == "2afc" else {"d": ("p0", "p1")}
    chunks: Dict[str, Dict[str, List[Tensor]]] = {s: {} for s in sides}
    for _, batch in part.batches(batch_size):
        deep = {}
        if scorer is not None:
            if part.task == "2afc":
                r = scorer.score({k: batch[k] for k in image_dirs}, per_layer=True)
                deep = {"d0": r["d0"], "d1": r["d1"]}
            else:
                deep = {"d": scorer.distance(batch["p0"], batch["p1"], per_layer=True)}
        for side, (a, b) in sides.items():
            found = dict(deep.get(side, {}))
            found.update({name: baseline_distance(name, batch[a], batch[b]) for name in baselines})
            for name, v in found.items():
                chunks[side].setdefault(name, []).append(v.detach().cpu())
        bar.update(batch[image_dirs[0]].shape[0])
    return {side: {name: torch.cat(v) for name, v in by_name.items()} for side, by_name in chunks.items()}


def _part_scores(part: BappsPart, d: Dict[str, Tensor]) -> List[float]:
    """Per-category scores from per-item distances ``d`` (``d0``/``d1`` or ``d``, each ``[N]``)."""
    k = len(part.categories)
    if part.task == "2afc":
        return category_means(two_afc(d["d0"], d["d1"], part.target), part.category, k).tolist()
    return [jnd_map(d["d"][part.category == c], part.target[part.category == c]) for c in range(k)]


def _summary(part: BappsPart, scores: List[float]) -> float:
    return perceptual_score(scores) if part.task == "2afc" else 100.0 * sum(scores) / len(scores)


def evaluate_bapps(data: Bapps, scorer: Optional[Scorer] = None, baselines: Sequence[str] = (), per_layer: bool = False,
                   batch_size: int = 64, progress: bool = True) -> BappsResult:
    """Scores every part of ``data`` with the scorer's distances (one trunk pass per image: each
    batch's ref/p0/p1 go through the trunk together, per-layer terms and their sum come from it)
    and the named ``baselines`` (``l2``, ``ssim``, ``psnr``). ``per_layer`` adds each layer's term
    alone. Returns a :class:`BappsResult`."""
    if scorer is None and not baselines:
        raise ValueError("nothing to evaluate: give a scorer (deep distances) and/or baselines (l2, ssim, psnr)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    names = [*(scorer.distances if scorer is not None else ()), *baselines]
    bar = Progress(sum(len(p) for p in data.parts.values()), "scoring", "items", enabled=progress)
    parts: Dict[str, PartResult] = {}
    start = time.perf_counter()
    with torch.no_grad():
        for key, part in data.parts.items():
            raw = _score_part(part, scorer, baselines, batch_size, bar)
            counts = torch.bincount(part.category, minlength=len(part.categories)).tolist()
            res = PartResult(key, part.task, list(part.categories), counts)
            for name in names:
                per_item = {side: v[name] for side, v in raw.items()}
                totals = {side: (v.sum(dim=1) if v.dim() == 2 else v) for side, v in per_item.items()}
                res.distances.update({side: {**res.distances.get(side, {}), name: t} for side, t in totals.items()})
                res.scores[name] = _part_scores(part, totals)
                res.summary[name] = _summary(part, res.scores[name])
                layers = next(iter(per_item.values()))
                if per_layer and layers.dim() == 2:
                    res.layer_scores[name] = [_part_scores(part, {s: v[:, i] for s, v in per_item.items()})
                                              for i in range(layers.shape[1])]
                    res.layer_summary[name] = [_summary(part, s) for s in res.layer_scores[name]]
            parts[key] = res
    seconds = time.perf_counter() - start
    model = {"trunk": scorer.trunk_name, "precision": scorer.precision} \
        if scorer is not None else {}
    return BappsResult(data.source, data.synthetic, data.note, data.size, model, names, parts, seconds,
                       sum(len(p) for p in data.parts.values()))
