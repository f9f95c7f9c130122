"""``perceptual-fast pack DATASET_DIR -o bapps.safetensors``: decode a BAPPS folder once into a pack."""

from __future__ import annotations

import argparse
import os

from ..bapps.pack import load_pack, pack_folder


def add_parser(sub) -> None:
    p = sub.add_parser("pack", help="decode a BAPPS folder once into a memory-mappable safetensors pack")
    p.add_argument("dataset", help="BAPPS folder (holding 2afc/ and/or jnd/)")
    p.add_argument("-o", "--output", required=True, help="pack file to write (e.g. bapps.safetensors)")
    p.add_argument("--size", type=int, default=64, help="resize images to SIZE x SIZE, PIL bilinear as LPIPS (default: 64)")
    p.add_argument("--split", default="val", help="comma-separated: val, train or all (default: val)")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = pack_folder(args.dataset, args.output, size=args.size, splits=args.split.split(","), workers=args.workers,
                      progress=not args.quiet)
    data = load_pack(out, verify=False)
    label = "SYNTHETIC " if data.synthetic else ""
    print(f"wrote {label}pack {out} ({os.path.getsize(out) / 2**20:.1f} MiB, {data.size}x{data.size}): "
          + ", ".join(f"{k} {len(p)} items in {len(p.categories)} categories" for k, p in data.parts.items()))
    return 0
