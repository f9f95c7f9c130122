"""Side-by-side timing of the spatial + lpips terms: cpp kernel vs the torch reference, in one run.

    python bench/spatial_term_table.py        # prints a table, writes bench/results/spatial_term.{csv,json}

Reports median wall time over repeats, the ratio, and GB/s = feature bytes read / time, next to
this machine's measured memory bandwidth (a large tensor copy: read + write bytes / time).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cases import BATCH, DISTANCES, NETS, feature_bytes, runner, tap_features  # noqa: E402

from perceptual_fast import _C  # noqa: E402
from perceptual_fast.report import format_table  # noqa: E402


def median_seconds(fn, repeats: int = 15, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth_gbs(megabytes: int = 512) -> float:
    """Measured memory bandwidth: bytes read + written by a large copy, per second."""
    src = torch.rand(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), repeats=7, warmup=2)
    return 2 * src.numel() * 4 / seconds / 1e9


def main() -> None:
    torch.set_grad_enabled(False)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, {_C.max_threads()} OpenMP threads"
    )
    bandwidth = copy_bandwidth_gbs()
    rows, records = [], []
    for net in NETS:
        feats0, feats1 = tap_features(net)
        nbytes = feature_bytes(feats0) + feature_bytes(feats1)
        t_ref = median_seconds(runner("torch", feats0, feats1))
        t_cpp = median_seconds(runner("cpp", feats0, feats1))
        # Both distances read the features once each: 2 passes over the pair in total.
        gbs = len(DISTANCES) * nbytes / t_cpp / 1e9
        rows.append([net, nbytes / 1e6, 1e3 * t_ref, 1e3 * t_cpp, t_ref / t_cpp, gbs, 100 * gbs / bandwidth])
        records.append({"net": net, "batch": BATCH, "distances": list(DISTANCES), "feature_mb": nbytes / 1e6,
                        "torch_ms": 1e3 * t_ref, "cpp_ms": 1e3 * t_cpp, "speedup": t_ref / t_cpp,
                        "cpp_gb_per_s": gbs, "copy_bandwidth_gb_per_s": bandwidth, "machine": machine})
    headers = ["taps of", "pair MB", "torch ms", "cpp ms", "speedup", "cpp GB/s", "% of copy BW"]
    print(f"spatial + lpips terms, all layers, batch {BATCH}, 64x64 inputs; {machine}")
    print(f"measured copy bandwidth: {bandwidth:.1f} GB/s (read + write of 512 MiB)\n")
    print(format_table(headers, rows, floatfmt=".2f"))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    with open(out / "spatial_term.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows({**r, "distances": "+".join(r["distances"])} for r in records)
    (out / "spatial_term.json").write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
