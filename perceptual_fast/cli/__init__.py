"""``perceptual-fast``: the command line (``main``; ``python -m perceptual_fast.cli`` runs it too).

One module per command in this package, each with ``add_parser(subparsers)`` that sets ``func``; to add
a command, write ``cli/<name>.py`` and list it in ``COMMANDS``. The commands that score with a Scorer
(score, bapps, sweep) declare its options with the helpers of ``cli/options.py``.

  perceptual-fast score IMG0 IMG1 [--trunk alexnet --weights W --lin L --distance spatial,lpips --json]
  perceptual-fast score DIR0 DIR1 ...      (pairs of files with the same name)
  perceptual-fast demo                     (synthetic triplets, random weights: no data, no downloads)
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..util.allocator import tune_cpu_allocator
from . import bapps, demo, export, info, make_bapps, pack, pairwise, plot, score, sweep, train, train_lin

COMMANDS = (score, pairwise, demo, export, make_bapps, pack, bapps, train, sweep, plot, train_lin, info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceptual-fast", description="Fast deep-feature image distances (LPIPS and friends).")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    tune_cpu_allocator()  # our own process: keep freed memory for the next trunk pass (util/allocator.py)
    try:
        return args.func(args)
    except ValueError as err:  # bad input: a message, not a traceback
        print(f"perceptual-fast: error: {err}", file=sys.stderr)
        return 2

