"""``perceptual-fast make-bapps OUT_DIR``: a small SYNTHETIC data set in the published BAPPS layout."""

from __future__ import annotations

import argparse

from ..bapps.synthetic import KINDS, SOURCES, make_bapps


def add_parser(sub) -> None:
    p = sub.add_parser("make-bapps", help="write a small SYNTHETIC data set in the published BAPPS layout")
    p.add_argument("out_dir", help="new folder to write")
    p.add_argument("--triplets", type=int, default=40, help="2afc/val triplets per category (default: 40)")
    p.add_argument("--jnd", type=int, default=40, help="jnd/val pairs per category (default: 40)")
    p.add_argument("--train", type=int, default=0, help="2afc/train triplets per category (default: 0)")
    p.add_argument("--categories", default=",".join(KINDS),
                   help=f"distortion kinds, one category each (default: {','.join(KINDS)})")
    p.add_argument("--source", default="generated", choices=SOURCES,
                   help="reference images: generated (default) or crops of scikit-image's sample photos")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = make_bapps(args.out_dir, triplets=args.triplets, jnd=args.jnd, train=args.train,
                      categories=args.categories.split(","), source=args.source, seed=args.seed, progress=not args.quiet)
    print(f"wrote a SYNTHETIC BAPPS-layout data set to {root} (rule in {root / 'SYNTHETIC.txt'})")
    return 0
