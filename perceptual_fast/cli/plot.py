"""``perceptual-fast plot RESULTS -o ps_vs_acc.png [--per-layer]``: PS vs accuracy per sweep axis, PS vs training
step, and (``--per-layer``) each layer's PS vs accuracy."""

from __future__ import annotations

import argparse

from ..study.plot import plot_results, sweep_axes
from ..study.sweep import read_results


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="plot a sweep: PS vs accuracy per swept hyperparameter, PS vs step (needs matplotlib)")
    p.add_argument("results", help="a sweep's output folder or its results.jsonl")
    p.add_argument("-o", "--output", default="ps_vs_acc.png", help="image to write (default: ps_vs_acc.png)")
    p.add_argument("--distance", default=None, help="whose PS to plot (default: the first distance of the sweep)")
    p.add_argument("--per-layer", action="store_true",
                   help="add a panel of each layer's PS vs accuracy, one line per layer (for --distance)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    records = read_results(args.results)
    out = plot_results(records, args.output, args.distance, per_layer=args.per_layer)
    axes = sweep_axes([r for r in records if r.get("status") == "ok"])
    layers = ", and per-layer PS vs accuracy" if args.per_layer else ""
    print(f"wrote {out}: PS vs accuracy by {', '.join(axes) if axes else 'run'}, PS vs training step{layers}")
    return 0
