"""``perceptual-fast demo``: the embedded default job (synthetic triplets, random weights)."""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from typing import Dict, List

import torch

from ..data.synthetic import JUDGE_SLOPE, JUDGES, KINDS, synthetic_triplets
from ..report import format_table
from .common import add_scorer_options, build_scorer, weights_label


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="score synthetic triplets with a random-weight trunk (no data or weights needed)")
    add_scorer_options(p, "spatial,meanpool,style", "random")
    p.add_argument("--triplets", type=int, default=256, help="number of synthetic triplets (default: 256)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Scores SYNTHETIC triplets with a random-weight trunk: the whole pipeline, no data or weights needed."""
    start = time.perf_counter()
    data = synthetic_triplets(args.triplets, args.size, seed=args.seed)
    made = time.perf_counter()
    scorer = build_scorer(args)
    agreement: Dict[str, List[torch.Tensor]] = defaultdict(list)
    with torch.no_grad():
        for i in range(0, args.triplets, args.batch_size):
            batch = {k: data[k][i : i + args.batch_size] for k in ("ref", "p0", "p1", "judge")}
            for name, v in scorer.score(batch)["2afc"].items():
                agreement[name].append(v)
    scored = time.perf_counter()
    per_kind = {
        name: {KINDS[k]: float(torch.cat(v)[data["kind"] == k].mean()) for k in range(len(KINDS)) if (data["kind"] == k).any()}
        for name, v in agreement.items()
    }
    overall = {name: float(torch.cat(v).mean()) for name, v in agreement.items()}
    rate = args.triplets / (scored - made)
    if args.json:
        print(json.dumps({"data": "synthetic", "triplets": args.triplets, "size": args.size, "trunk": args.trunk,
                          "weights": weights_label(args), "2afc": overall, "2afc_by_kind": per_kind,
                          "triplets_per_second": rate}, indent=2))
        return 0
    print(f"perceptual_fast demo: {args.triplets} SYNTHETIC triplets at {args.size}x{args.size} (seed {args.seed}); "
          f"judgements by rule: share preferring p1 = sigmoid({JUDGE_SLOPE:g} (s0 - s1)) rounded to 1/{JUDGES}, "
          "s = distortion strength")
    print(f"trunk {args.trunk}, weights {weights_label(args)}: reproducible, not a calibrated perceptual metric\n")
    kinds = [k for k in KINDS if any(k in v for v in per_kind.values())]
    rows = [[name, 100 * overall[name], *(100 * per_kind[name][k] for k in kinds)] for name in scorer.distances]
    print(format_table(["distance", "2AFC x100", *kinds], rows, floatfmt=".2f"))
    print(f"\ngenerated in {made - start:.2f} s; scored in {scored - made:.2f} s ({rate:.0f} triplets/s, "
          f"backend {args.backend}, {torch.get_num_threads()} threads)")
    return 0
