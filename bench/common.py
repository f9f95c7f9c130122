"""Helpers shared by the benchmark scripts: timing, naming the machine, writing results."""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

RESULTS = Path(__file__).parent / "results"


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ISA features that change which kernels and precisions are fast (Linux /proc/cpuinfo flag names)
_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve")


def cpu_name() -> str:
    """The CPU model and the ISA features of ``_FEATURES`` it has, e.g. ``AMD EPYC (avx2 fma avx512f)``."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
    except OSError:
        pass
    return f"{model} ({' '.join(f for f in _FEATURES if f in flags) or 'no listed features'})"


def machine_name() -> str:
    """The CPU and its ISA features, its core count, torch's version and the thread counts in force."""
    try:
        from perceptual_fast import _C

        omp = f", {_C.max_threads()} OpenMP threads"
    except ImportError:
        omp = ""
    return (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads{omp}"
    )


def write_records(name: str, records: List[Dict[str, object]]) -> None:
    """Writes ``results/<name>.csv`` and ``results/<name>.json`` (one row / object per record)."""
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    (RESULTS / f"{name}.json").write_text(json.dumps(records, indent=2) + "\n")
