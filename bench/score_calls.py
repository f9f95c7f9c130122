"""Repeated one-shot `pf.score(batch, ...)` calls against a held `Scorer(...).score(batch)`.

    python bench/score_calls.py [--trunk alexnet] [--triplets 8] [--size 64] [--rounds 30]

Three ways to score the same batch (--triplets triplets of --size x --size, random weights, seed 0,
distances spatial; fp32 on the CPU), timed per call:
  held      scorer = pf.Scorer(...) once, then scorer.score(batch) per call
  cached    pf.score(batch, trunk=..., weights="random", ...) per call (its Scorer cache hits)
  uncached  the same pf.score call with the cache cleared before it (builds a Scorer every call:
            what pf.score cost before the cache); the clearing is outside the timed call
Interleaved rounds (held, cached, uncached in turn, one call each), after a warm-up round; median
seconds per call. Writes bench/results/score_calls.{csv,json}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_name, median_seconds, write_records  # noqa: E402

import perceptual_fast as pf  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402


def cpu_flags() -> str:
    """The /proc/cpuinfo model name and which of avx2, avx512f, avx512_bf16, amx* it lists."""
    info = Path("/proc/cpuinfo")
    if not info.exists():
        return "no /proc/cpuinfo"
    text = info.read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    words = set(text.split())
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16") if f in words] + sorted(w for w in words if w.startswith("amx"))
    return f"{model}, flags: {' '.join(flags) or 'none of avx2/avx512f/avx512_bf16/amx'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trunk", default="alexnet")
    ap.add_argument("--triplets", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=30, help="timed calls of each way (median)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(args.triplets, 3, args.size, args.size, generator=g) * 2 - 1 for k in ("ref", "p0", "p1")}
    kwargs = dict(trunk=args.trunk, weights="random", seed=0, distances=("spatial",))

    held = pf.Scorer(**kwargs)
    want = held.score(batch)["d0"]["spatial"]

    def uncached() -> float:
        pf.score.cache_clear()  # not timed
        return median_seconds(lambda: pf.score(batch, **kwargs), repeats=1, warmup=0)

    # One timed call per way and round (median_seconds of one call), the rounds interleaved.
    ways = {
        "held": lambda: median_seconds(lambda: held.score(batch), repeats=1, warmup=0),
        "cached": lambda: median_seconds(lambda: pf.score(batch, **kwargs), repeats=1, warmup=0),
        "uncached": uncached,
    }
    for fn in ways.values():  # warm-up round
        fn()
    times = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, fn in ways.items():
            times[name].append(fn())
    pf.score.cache_clear()
    assert torch.equal(pf.score(batch, **kwargs)["d0"]["spatial"], want), "pf.score differs from the held Scorer"

    machine = f"{machine_name()}; {cpu_flags()}"
    load = os.getloadavg()[0]
    held_s = statistics.median(times["held"])
    records = []
    for name, ts in times.items():
        med = statistics.median(ts)
        records.append({
            "way": name, "trunk": args.trunk, "triplets": args.triplets, "size": args.size, "rounds": args.rounds,
            "median_ms": 1e3 * med, "min_ms": 1e3 * min(ts), "max_ms": 1e3 * max(ts), "vs_held": med / held_s,
            "machine": machine, "load_avg_1min_end": load,
        })
    print(f"machine: {machine}")
    print(f"{args.trunk}, random weights, {args.triplets} triplets of {args.size}x{args.size}, spatial distance, fp32; "
          f"median of {args.rounds} interleaved rounds; 1-minute load at the end {load:.2f} on {os.cpu_count()} cores\n")
    rows = [[r["way"], r["median_ms"], r["min_ms"], r["max_ms"], f"{r['vs_held']:.2f}x"] for r in records]
    print(format_table(["way", "median ms/call", "min ms", "max ms", "vs held"], rows, floatfmt=".2f"))
    write_records("score_calls", records)


if __name__ == "__main__":
    main()
