"""``perceptual-fast demo``: the embedded default job, the paper's experiment in miniature.

Trains a ResNet-6 from a random initialisation on SYNTHETIC classes (checkpoints along the way),
makes a SYNTHETIC BAPPS-layout set, sweeps the checkpoints on it, prints the table and writes the
PS-vs-accuracy plot. No data, weights or downloads; a rerun resumes (training and sweep).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ..bapps.pack import pack_folder
from ..bapps.synthetic import RULE, make_bapps
from ..study.sweep import format_results, run_sweep
from ..study.train import TrainConfig, train


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train a ResNet-6 on SYNTHETIC classes, sweep its checkpoints on SYNTHETIC BAPPS, "
                                    "print the table and plot (no data or weights needed)")
    p.add_argument("-o", "--output", default="perceptual-fast-demo", help="output folder (default: ./perceptual-fast-demo)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (default: 50)")
    p.add_argument("--width", type=float, default=0.25, help="ResNet-6 width multiplier (default: 0.25)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
    p.add_argument("--triplets", type=int, default=40, help="SYNTHETIC BAPPS triplets per category (default: 40)")
    p.add_argument("--distance", default="spatial,meanpool,style", help="distances to sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the sweep records as JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    progress = not args.quiet
    start = time.perf_counter()
    cfg = TrainConfig(trunk="resnet6", width=args.width, size=args.size, steps=args.steps, batch_size=64, lr=0.1,
                      warmup_steps=min(20, args.steps // 10), synthetic_n=2048, checkpoint_every=args.checkpoint_every,
                      seed=args.seed)
    if not args.json:
        print(f"perceptual_fast demo: ResNet-6 (width {args.width:g}) trained from a RANDOM initialisation on SYNTHETIC "
              f"classes ({cfg.num_classes} grating orientations, {args.size}x{args.size}), {args.steps} steps; "
              f"its checkpoints scored on a SYNTHETIC BAPPS-layout set (not human judgements)")
    train(cfg, out / "run", progress=progress)
    trained = time.perf_counter()
    pack = out / "synthetic_bapps.safetensors"
    if not pack.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            make_bapps(Path(tmp) / "bapps", triplets=args.triplets, jnd=0, seed=args.seed, progress=progress)
            pack_folder(Path(tmp) / "bapps", pack, size=args.size, progress=progress)
    made = time.perf_counter()
    records = run_sweep([str(out / "run")], pack, args.distance.split(","), out / "sweep", device="cpu", progress=progress)
    swept = time.perf_counter()
    if args.json:
        print(json.dumps({"data": "synthetic", "records": records}, indent=1))
        return 0
    print("\n" + "\n".join(RULE.splitlines()[:3]) + "\n")
    print(format_results(records))
    try:
        from ..study.plot import plot_results

        figure = f"plot: {plot_results(records, out / 'ps_vs_acc.png')}"
    except ValueError as err:  # matplotlib is an optional extra
        figure = f"no plot ({err})"
    print(f"\ntrained in {trained - start:.0f} s, made the BAPPS set in {made - trained:.0f} s, swept in "
          f"{swept - made:.0f} s; table: {out / 'sweep' / 'results.csv'}; {figure}")
    print(f"total {time.perf_counter() - start:.0f} s; rerun to resume, or remove {out} to start again")
    return 0
