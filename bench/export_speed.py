"""Exported trunks against the eager trunk: forward_taps images/s from a .pt2 program, a TorchScript archive, the class.

    flock /tmp/pf_heavy.lock python bench/export_speed.py [--trunks alexnet,resnet50,vit_s_8] [--batch 64] [--repeats 5]

Each trunk (random weights, seed 0) is written with ``perceptual-fast export`` as ``.pt2`` and
``.pt`` and read back with ``load_trunk``; the three run the same channels_last float32 batch of
64x64 images under ``torch.no_grad``, round robin, median of ``--repeats``. Writes
bench/results/export_speed.{csv,json}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_name, write_records  # noqa: E402

from perceptual_fast.cli import main as cli  # noqa: E402
from perceptual_fast.trunks import load_trunk  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402

FORMATS = ("eager", ".pt2", ".pt")


def run_trunk(name: str, batch: int, repeats: int, folder: Path) -> dict:
    trunks = {"eager": load_trunk(name, weights="random", head=False)}
    for suffix in FORMATS[1:]:
        path = folder / f"{name}{suffix}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert cli(["export", "--trunk", name, "--weights", "random", "-o", str(path)]) == 0
            trunks[suffix] = load_trunk(path)
    trunks = {k: t.to(memory_format=torch.channels_last) for k, t in trunks.items()}
    x = torch.randn(batch, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    times = {k: [] for k in trunks}
    with torch.no_grad():
        for trunk in trunks.values():
            trunk.forward_taps(x)  # warm-up (TorchScript profiles its first calls)
            trunk.forward_taps(x)
        for _ in range(repeats):
            for key, trunk in trunks.items():
                start = time.perf_counter()
                trunk.forward_taps(x)
                times[key].append(time.perf_counter() - start)
    rate = {k: batch / statistics.median(t) for k, t in times.items()}
    return {"trunk": name, "batch": batch, "repeats": repeats, **{f"{k}_images_per_s": v for k, v in rate.items()},
            **{f"{k}_of_eager": rate[k] / rate["eager"] for k in FORMATS[1:]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trunks", default="alexnet,resnet50,vit_s_8")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    machine = machine_name()
    with tempfile.TemporaryDirectory() as tmp:
        records = [run_trunk(name, args.batch, args.repeats, Path(tmp)) for name in args.trunks.split(",")]
    headers = ["trunk", "eager img/s", ".pt2 img/s", ".pt2 / eager", "TorchScript img/s", "TorchScript / eager"]
    rows = [[r["trunk"], r["eager_images_per_s"], r[".pt2_images_per_s"], f"{r['.pt2_of_eager']:.2f}x",
             r[".pt_images_per_s"], f"{r['.pt_of_eager']:.2f}x"] for r in records]
    print(f"machine: {machine}\nforward_taps, batch {args.batch} of 64x64, float32 channels_last, "
          f"median of {args.repeats} round-robin runs\n")
    print(format_table(headers, rows, floatfmt=".1f"))
    load = os.getloadavg()[0]
    print(f"1-minute load average at the end: {load:.2f} on {os.cpu_count()} cores (above ~2.2, other work shared the cores)")
    write_records("export_speed", [{"machine": machine, "load_avg_1min_end": load, **r} for r in records])


if __name__ == "__main__":
    main()
