"""``perceptual-fast train-lin``: learn LPIPS lin weights for a frozen trunk on BAPPS 2AFC train data."""

from __future__ import annotations

import argparse

from ..bapps.pack import load_bapps
from ..scorer import Scorer
from ..study.train_lin import save_lin, train_lin
from ..util.tables import format_table


def add_parser(sub) -> None:
    p = sub.add_parser("train-lin", help="learn LPIPS lin (per-channel) weights on BAPPS 2AFC train data, lpips file format")
    p.add_argument("data", help="BAPPS pack or folder holding 2afc/train (make-bapps --train N makes a SYNTHETIC one)")
    p.add_argument("--trunk", required=True, help="a trunk name (with --weights) or a checkpoint/TorchScript file")
    p.add_argument("--weights", default=None, help="for a trunk name: a local file, 'torchvision' or 'random'")
    p.add_argument("-o", "--output", required=True, help="lin file to write (.pth, lpips format, or .safetensors)")
    p.add_argument("--epochs", type=int, default=5, help="epochs at constant LR (lpips: 5)")
    p.add_argument("--decay-epochs", type=int, default=5, help="epochs with LR falling linearly to 0 (lpips: 5)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (lpips: 1e-4)")
    p.add_argument("--batch-size", type=int, default=50, help="triplets per step (lpips: 50)")
    p.add_argument("--dropout", type=float, default=0.5, help="dropout on the terms entering the lin layers (lpips: 0.5)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = load_bapps(args.data, splits=("train",), progress=not args.quiet)
    scorer = Scorer(args.trunk, weights=args.weights, distances=("spatial",), device=args.device, seed=args.seed)
    result = train_lin(scorer, data.parts["2afc/train"], args.epochs, args.decay_epochs, args.lr, args.batch_size,
                       args.dropout, args.seed, progress=not args.quiet)
    path = save_lin(result.weights, args.output)
    label = "SYNTHETIC " if data.synthetic else ""
    print(f"lin weights for {scorer.trunk_name} on {len(data.parts['2afc/train'])} {label}2afc/train triplets -> {path}")
    print(format_table(["epoch", "BCE loss"], [[i + 1, v] for i, v in enumerate(result.epoch_loss)], floatfmt=".4f"))
    print(f"train 2AFC x100: learned lin {100 * result.train_2afc:.2f}, uniform weights (spatial) "
          f"{100 * result.train_2afc_uniform:.2f}")
    print(f"score with it: Scorer(trunk=..., lin={str(path)!r}, distances=('lpips',))")
    return 0
