"""``perceptual-fast``: command-line entry points.

  perceptual-fast score IMG0 IMG1 [--trunk alexnet --weights W --lin L --distance spatial,lpips --json]
  perceptual-fast score DIR0 DIR1 ...      (pairs of files with the same name)
  perceptual-fast demo                     (synthetic triplets, random weights: no data, no downloads)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from .data.synthetic import JUDGE_SLOPE, JUDGES, KINDS, synthetic_triplets
from .distances import DISTANCES
from .images import pair_paths, read_image
from .report import format_table
from .scorer import Scorer
from .trunks import list_trunks


def _add_scorer_options(p: argparse.ArgumentParser, default_distances: str, default_weights: Optional[str]) -> None:
    p.add_argument("--trunk", default="alexnet", choices=list_trunks(), help="feature trunk (default: alexnet)")
    p.add_argument(
        "--weights",
        default=default_weights,
        help="trunk weights: a local file (.safetensors/.pt/.pth/TorchScript), 'torchvision' (torch hub cache) "
        "or 'random' (seeded); nothing is downloaded",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --weights random (default: 0)")
    p.add_argument("--lin", default=None, help="LPIPS lin weights for the lpips distance: a file, or 'lpips' (installed package)")
    p.add_argument("--distance", default=default_distances, help=f"comma-separated, from {','.join(DISTANCES)}")
    p.add_argument("--backend", default="auto", help="auto, cpp or torch (PERCEPTUAL_FAST_BACKEND overrides)")
    p.add_argument("--device", default="cpu", help="torch device for the trunk (default: cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="images scored per trunk pass (default: 32)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _scorer(args: argparse.Namespace) -> Scorer:
    return Scorer(
        args.trunk,
        weights=args.weights,
        lin=args.lin,
        distances=args.distance.split(","),
        device=args.device,
        backend=args.backend,
        seed=args.seed,
    )


def _weights_label(args: argparse.Namespace) -> str:
    return f"random (seed {args.seed})" if args.weights == "random" else str(args.weights)


def cmd_score(args: argparse.Namespace) -> int:
    pairs = pair_paths(Path(args.a), Path(args.b))
    scorer = _scorer(args)
    images = {name: (read_image(pa, args.size), read_image(pb, args.size)) for name, pa, pb in pairs}
    by_shape: Dict[tuple, List[str]] = defaultdict(list)
    for name, (ia, ib) in images.items():
        if ia.shape != ib.shape:
            raise ValueError(f"pair {name!r}: images are {tuple(ia.shape[1:])} and {tuple(ib.shape[1:])} pixels; pass --size N to resize both")
        by_shape[tuple(ia.shape)].append(name)
    results: Dict[str, Dict[str, object]] = {}
    with torch.no_grad():
        for names in by_shape.values():  # one batch per image size
            for start in range(0, len(names), args.batch_size):
                chunk = names[start : start + args.batch_size]
                x0 = torch.stack([images[n][0] for n in chunk])
                x1 = torch.stack([images[n][1] for n in chunk])
                d = scorer.distance(x0, x1, per_layer=args.per_layer)
                for i, n in enumerate(chunk):
                    results[n] = {k: (v[i].tolist() if args.per_layer else float(v[i])) for k, v in d.items()}
    ordered = [name for name, _, _ in pairs]
    if args.json:
        doc = {"trunk": args.trunk, "weights": _weights_label(args), "lin": args.lin, "distances": list(scorer.distances),
               "pairs": [{"name": n, **results[n]} for n in ordered]}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"trunk {args.trunk}, weights {_weights_label(args)}" + (f", lin {args.lin}" if args.lin else ""))
    if args.weights == "random":
        print("note: a randomly initialised trunk gives reproducible distances, not calibrated perceptual ones")
    if args.per_layer:
        headers = ["pair"] + [f"{d}[{l}]" for d in scorer.distances for l in range(len(results[ordered[0]][scorer.distances[0]]))]
        rows = [[n] + [v for d in scorer.distances for v in results[n][d]] for n in ordered]
    else:
        headers = ["pair", *scorer.distances]
        rows = [[n] + [results[n][d] for d in scorer.distances] for n in ordered]
    print(format_table(headers, rows))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Scores SYNTHETIC triplets with a random-weight trunk: the whole pipeline, no data or weights needed."""
    start = time.perf_counter()
    data = synthetic_triplets(args.triplets, args.size, seed=args.seed)
    made = time.perf_counter()
    scorer = _scorer(args)
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
                          "weights": _weights_label(args), "2afc": overall, "2afc_by_kind": per_kind,
                          "triplets_per_second": rate}, indent=2))
        return 0
    print(f"perceptual_fast demo: {args.triplets} SYNTHETIC triplets at {args.size}x{args.size} (seed {args.seed}); "
          f"judgements by rule: share preferring p1 = sigmoid({JUDGE_SLOPE:g} (s0 - s1)) rounded to 1/{JUDGES}, "
          "s = distortion strength")
    print(f"trunk {args.trunk}, weights {_weights_label(args)}: reproducible, not a calibrated perceptual metric\n")
    kinds = [k for k in KINDS if any(k in v for v in per_kind.values())]
    rows = [[name, 100 * overall[name], *(100 * per_kind[name][k] for k in kinds)] for name in scorer.distances]
    print(format_table(["distance", "2AFC x100", *kinds], rows, floatfmt=".2f"))
    print(f"\ngenerated in {made - start:.2f} s; scored in {scored - made:.2f} s ({rate:.0f} triplets/s, "
          f"backend {args.backend}, {torch.get_num_threads()} threads)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceptual-fast", description="Fast deep-feature image distances (LPIPS and friends).")
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="distances between two images, or two folders of images paired by name")
    score.add_argument("a", help="image file or folder")
    score.add_argument("b", help="image file or folder (same names as in a)")
    _add_scorer_options(score, "spatial", None)
    score.add_argument("--size", type=int, default=None, help="resize every image to SIZE x SIZE first (PIL bilinear)")
    score.add_argument("--per-layer", action="store_true", help="report every layer's term")
    score.set_defaults(func=cmd_score)
    demo = sub.add_parser("demo", help="score synthetic triplets with a random-weight trunk (no data or weights needed)")
    _add_scorer_options(demo, "spatial,meanpool,style", "random")
    demo.add_argument("--triplets", type=int, default=256, help="number of synthetic triplets (default: 256)")
    demo.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # bad input: a message, not a traceback
        print(f"perceptual-fast: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
