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

import numpy as np
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


def interleaved(runs: dict, repeats: int) -> dict:
    """Median seconds of each callable, run in turn ``repeats`` times after one warm-up each."""
    for fn in runs.values():
        fn()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


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
    """Writes ``results/<name>.csv`` and ``results/<name>.json`` (one row / object per record; the CSV's
    columns are every key of any record, in first-seen order, empty where a record lacks one)."""
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in records for k in r)), restval="")
        writer.writeheader()
        writer.writerows(records)
    (RESULTS / f"{name}.json").write_text(json.dumps(records, indent=2) + "\n")


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina", "cat", "colorwheel",
          "logo", "skin", "hubble_deep_field", "motorcycle_left")


def photo_crops(count: int, side: int, seed: int) -> torch.Tensor:
    """``count`` uint8 crops ``[N, 3, side, side]`` of the sample photos: a random photo, box and scale each."""
    from skimage import data

    photos = []
    for name in PHOTOS:
        try:
            img = getattr(data, name)()
        except Exception:  # a photo this scikit-image lacks or cannot load offline
            continue
        if img.ndim == 3 and img.shape[2] >= 3:
            photos.append(torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1).float())
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        img = photos[rng.integers(len(photos))]
        h, w = img.shape[1:]
        box = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        top, left = rng.integers(0, h - box + 1), rng.integers(0, w - box + 1)
        crop = img[:, top:top + box, left:left + box][None]
        out.append(torch.nn.functional.interpolate(crop, size=(side, side), mode="bilinear", antialias=True,
                                                   align_corners=False)[0])
    return torch.stack(out).round().clamp(0, 255).to(torch.uint8)
