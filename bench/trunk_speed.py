"""Trunk throughput: images/s of each family's representative at 64x64, batch 128, on this CPU.

    python bench/trunk_speed.py        # prints a table, writes bench/results/trunk_speed.{csv,json}

Times ``forward_taps`` (what scoring runs; classifier heads are not built) under ``torch.no_grad``
in four modes: float32 or bfloat16 autocast, NCHW or channels_last (model and input). Reports the
median of repeats, the trunk's GFLOPs per image (``torch.utils.flop_counter.FlopCounterMode``,
one multiply-add = 2 FLOPs) and the achieved GFLOP/s. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_name, median_seconds, write_records  # noqa: E402

from perceptual_fast.trunks import load_trunk  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402

TRUNKS = ("alexnet", "vgg16", "squeezenet1_1", "resnet6", "resnet18", "resnet50", "vit_s_8")
MODES = [(dtype, layout) for dtype in ("fp32", "bf16") for layout in ("nchw", "channels_last")]


def gflops_per_image(trunk: torch.nn.Module, side: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        trunk.forward_taps(torch.randn(1, 3, side, side))
    return counter.get_total_flops() / 1e9


def runner(trunk: torch.nn.Module, x: torch.Tensor, dtype: str):
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()

    def run():
        with autocast:
            trunk.forward_taps(x)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trunks", default=",".join(TRUNKS))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    machine = machine_name()
    rows, records = [], []
    for name in args.trunks.split(","):
        trunk = load_trunk(name, weights="random", head=False)
        gflops = gflops_per_image(trunk, args.size)
        for dtype, layout in MODES:
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            trunk = trunk.to(memory_format=fmt)
            x = torch.randn(args.batch, 3, args.size, args.size).to(memory_format=fmt)
            seconds = median_seconds(runner(trunk, x, dtype), args.repeats)
            rate = args.batch / seconds
            rows.append([name, dtype, layout, gflops, 1e3 * seconds, rate, gflops * rate])
            records.append({"trunk": name, "dtype": dtype, "layout": layout, "batch": args.batch, "size": args.size,
                            "gflops_per_image": gflops, "median_ms": 1e3 * seconds, "images_per_s": rate,
                            "gflop_per_s": gflops * rate, "repeats": args.repeats, "machine": machine})
            print(f"  {name} {dtype} {layout}: {rate:.0f} images/s", flush=True)
    print(f"\ntrunk forward_taps, batch {args.batch}, {args.size}x{args.size}, median of {args.repeats}; {machine}\n")
    print(format_table(["trunk", "dtype", "layout", "GFLOP/img", "ms/batch", "images/s", "GFLOP/s"], rows, floatfmt=".2f"))
    write_records("trunk_speed", records)

if __name__ == "__main__":
    main()
