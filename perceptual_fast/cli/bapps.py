"""``perceptual-fast bapps DATA``: per-category 2AFC, PS and JND mAP on a BAPPS folder or pack."""

from __future__ import annotations

import argparse
import csv
import json
import tempfile

from ..bapps.baselines import BASELINES, split_distance_names
from ..bapps.evaluate import CSV_HEADER, evaluate_bapps
from ..bapps.pack import load_bapps
from ..bapps.synthetic import make_bapps
from .options import add_scorer_options, build_scorer, weights_label


def add_parser(sub) -> None:
    p = sub.add_parser("bapps", help="2AFC per category, PS and JND mAP on a BAPPS folder or pack")
    p.add_argument("data", nargs="?", default=None,
                   help="BAPPS folder or pack (perceptual-fast pack); omitted: a small SYNTHETIC set made on the fly")
    add_scorer_options(p, "spatial,meanpool,style", None)
    p.set_defaults(batch_size=64)
    p.add_argument("--per-layer", action="store_true", help="also the 2AFC and PS of each layer's term alone")
    p.add_argument("--size", type=int, default=None, help="image side for a folder (default 64; a pack keeps its own)")
    p.add_argument("--split", default="val", help="comma-separated: val, train or all (default: val)")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write every score as CSV rows to FILE")
    p.add_argument("--no-verify", action="store_true", help="skip the pack's content-hash check")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.epilog = f"--distance may also name the low-level baselines {', '.join(BASELINES)} (Lab L2/SSIM as LPIPS, PSNR)"
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    deep, baselines = split_distance_names(args.distance.split(","))
    scorer = build_scorer(argparse.Namespace(**{**vars(args), "distance": ",".join(deep)})) if deep else None
    with tempfile.TemporaryDirectory() as tmp:
        source = args.data if args.data is not None else make_bapps(f"{tmp}/synthetic_bapps", triplets=40, jnd=40,
                                                                    progress=not args.quiet)
        data = load_bapps(source, size=args.size, splits=args.split.split(","), verify=not args.no_verify,
                          progress=not args.quiet)
        result = evaluate_bapps(data, scorer, baselines, per_layer=args.per_layer, batch_size=args.batch_size,
                                progress=not args.quiet)
    if args.data is None:
        result.source = "embedded set (make-bapps defaults, seed 0, made in a temporary folder)"
    if scorer is not None:
        result.model["weights"] = weights_label(args)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            writer.writerows(result.csv_rows())
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.format())
    return 0
