"""``perceptual-fast score A B``: distances between two images, or two folders paired by name."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import torch

from ..util.images import pair_paths, read_image
from ..util.tables import format_table
from .options import add_scorer_options, build_scorer, weights_label


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="distances between two images, or two folders of images paired by name")
    p.add_argument("a", help="image file or folder")
    p.add_argument("b", help="image file or folder (same names as in a)")
    add_scorer_options(p, "spatial", None)
    p.add_argument("--size", type=int, default=None, help="resize every image to SIZE x SIZE first (PIL bilinear)")
    p.add_argument("--per-layer", action="store_true", help="report every layer's term")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pairs = pair_paths(Path(args.a), Path(args.b))
    scorer = build_scorer(args)
    images = {name: (read_image(pa, args.size), read_image(pb, args.size)) for name, pa, pb in pairs}
    by_shape: Dict[tuple, List[str]] = defaultdict(list)
    for name, (ia, ib) in images.items():
        if ia.shape != ib.shape:
            raise ValueError(
                f"pair {name!r}: images are {tuple(ia.shape[1:])} and {tuple(ib.shape[1:])} pixels; "
                "pass --size N to resize both"
            )
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
        doc = {"trunk": args.trunk, "weights": weights_label(args), "lin": args.lin, "distances": list(scorer.distances),
               "pairs": [{"name": n, **results[n]} for n in ordered]}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"trunk {args.trunk}, weights {weights_label(args)}" + (f", lin {args.lin}" if args.lin else ""))
    if args.weights == "random":
        print("note: a randomly initialised trunk gives reproducible distances, not calibrated perceptual ones")
    if args.per_layer:
        layers = len(results[ordered[0]][scorer.distances[0]])
        headers = ["pair"] + [f"{d}[{layer}]" for d in scorer.distances for layer in range(layers)]
        rows = [[n] + [v for d in scorer.distances for v in results[n][d]] for n in ordered]
    else:
        headers = ["pair", *scorer.distances]
        rows = [[n] + [results[n][d] for d in scorer.distances] for n in ordered]
    print(format_table(headers, rows))
    return 0
