"""``perceptual-fast info``: the build and the machine (``perceptual_fast.build_info``)."""

from __future__ import annotations

import argparse
import json

from ..build_info import build_info, format_build_info


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="what this install was built with and what this machine can do")
    p.add_argument("--json", action="store_true", help="print the build_info() dict as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = build_info()
    print(json.dumps(info, indent=2) if args.json else "\n".join(format_build_info(info)))
    return 0
