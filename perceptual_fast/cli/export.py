"""``perceptual-fast export``: a trunk with its weights as an archive the Scorer loads without the Python class.

``-o trunk.pt2``: a ``torch.export`` program of the taps (dynamic batch and image size; the
format torch recommends). ``-o trunk.pt``: a TorchScript archive (taps and, with ``--with-head``,
the classifier).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Dict, List

import torch

from ..trunks import export_trunk, load_trunk, trunk_name


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a trunk and its weights as a torch.export (.pt2) or TorchScript (.pt) archive "
             "(Scorer(trunk='trunk.pt2') scores with it)",
    )
    p.add_argument(
        "--trunk", required=True, help="a trunk name (resnet50, vit_b_8, alexnet, ...) or a weights file with its config"
    )
    p.add_argument("--weights", default=None, help="for a name: a local file, 'torchvision' (torch hub cache) or 'random'")
    p.add_argument("--seed", type=int, default=0, help="seed for --weights random (default: 0)")
    p.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE",
        help="trunk config override, repeatable; VALUE is JSON where it parses (width=0.25, skip_connections=false, taps=patch)",
    )
    p.add_argument("--with-head", action="store_true",
                   help="TorchScript only: keep the classifier (default: taps only, what scoring needs)")
    p.add_argument("-o", "--output", required=True,
                   help="archive to write: trunk.pt2 (torch.export, taps only) or trunk.pt (TorchScript)")
    p.set_defaults(func=run)


def parse_config(items: List[str]) -> Dict[str, object]:
    """``["width=0.25", "taps=patch"]`` -> ``{"width": 0.25, "taps": "patch"}`` (JSON values where they parse)."""
    config: Dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--config {item!r} is not KEY=VALUE (e.g. --config width=0.25)")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def run(args: argparse.Namespace) -> int:
    program = Path(args.output).suffix == ".pt2"
    if program and args.with_head:
        raise ValueError("a .pt2 archive holds the taps only; --with-head needs a TorchScript archive (-o trunk.pt)")
    trunk = load_trunk(args.trunk, args.weights, seed=args.seed, head=args.with_head, **parse_config(args.config))
    if program:
        export_trunk(trunk, args.output)
        kind = "torch.export program, dynamic batch and image size"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; users asked for this format
            torch.jit.save(torch.jit.script(trunk), args.output)
        kind = f"TorchScript, {'with' if args.with_head else 'without'} classifier"
    print(f"wrote {args.output}: trunk {trunk_name(trunk)}, {len(trunk.tap_channels)} taps with channels {trunk.tap_channels}, "
          f"min input {trunk.min_input_size()} px ({kind})")
    return 0
