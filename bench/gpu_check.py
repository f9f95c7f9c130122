"""GPU check of the fused op (run by bench/gpu_check.sh on a CUDA machine).

1. Correctness: the triton and cuda backends against the float64 reference on fresh random
   data with odd shapes (C=3, 17x23, 1x1, batch 1), pairs and triplets, fp32/bf16/fp16.
2. Timing: CUDA events, median of repeats, several GB of feature sets rotated so the L2 cache
   does not flatter; device copy bandwidth measured the same way. A short table comes last;
   results also go to $OUT (or bench/results) as gpu_check.{csv,json}.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cases import TAP_SHAPES, feature_bytes  # noqa: E402

import perceptual_fast as pf  # noqa: E402
from perceptual_fast import distances as D  # noqa: E402
from perceptual_fast.report import format_table  # noqa: E402

ODD = [(3, 17, 23), (1, 1, 1), (7, 1, 1), (21, 9, 11), (64, 15, 15), (384, 3, 3)]
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


def random_feats(shapes, batch, count, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    first = [torch.relu(torch.randn(batch, *s, generator=g, device="cuda")) for s in shapes]
    noisy = lambda t: torch.relu(t + 0.4 * torch.randn(t.shape, generator=g, device="cuda"))  # noqa: E731
    return [[t.to(dtype) for t in first]] + [[noisy(t).to(dtype) for t in first] for _ in range(count - 1)]


def check_correctness(backends):
    failures = []
    for backend in backends:
        for dtype in TOL:
            for batch, count in ((1, 2), (3, 3)):
                feats = random_feats(ODD, batch, count, dtype, seed=batch + count)
                lin = [torch.rand(s[0], device="cuda") for s in ODD]
                got = pf.fused_distance(*feats, distances=D.DISTANCES, lin=lin, backend=backend)
                got = [got] if count == 2 else list(got)
                f64 = [[t.double() for t in lst] for lst in feats]
                for q, terms in enumerate(got):
                    want = D.layer_terms(f64[0], f64[q + 1], D.DISTANCES, [w.double() for w in lin])
                    for name in D.DISTANCES:
                        err = ((terms[name].double() - want[name]).abs() - TOL[dtype] * want[name].abs()).max().item()
                        ok = bool(torch.isfinite(terms[name]).all()) and err <= 1e-7
                        if not ok:
                            failures.append(f"{backend} {dtype} batch {batch} count {count} {name}: excess error {err:.3g}")
        print(f"correctness {backend}: {'ok' if not failures else 'FAILED'}", flush=True)
    return failures


def cuda_time_ms(fn, repeats=20):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth_gbs():
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda: dst.copy_(src))
    return 2 * src.numel() / ms / 1e6


def main():
    assert torch.cuda.is_available(), "gpu_check needs a CUDA device"
    backends = [b for b in ("triton", "cuda") if not pf.backends.BACKENDS[b].unsupported(
        pf.backends.DistanceRequest(((torch.zeros(1, 1, 1, 1, device="cuda"),),) * 2, ("spatial",)))]
    print(f"device: {torch.cuda.get_device_name()}; backends: {backends}", flush=True)
    failures = check_correctness(backends)
    bandwidth = copy_bandwidth_gbs()
    rows, records = [], []
    batch = 256
    for net in TAP_SHAPES:
        for count, kind in ((2, "pair"), (3, "triplet")):
            one = random_feats(TAP_SHAPES[net], batch, count, torch.bfloat16, seed=7)
            nbytes = feature_bytes(one)
            sets = [one] + [random_feats(TAP_SHAPES[net], batch, count, torch.bfloat16, seed=8 + i)
                            for i in range(max(1, int(4e9 // nbytes)) - 1)]
            lin = [torch.rand(s[0], device="cuda") for s in TAP_SHAPES[net]]
            row = {"net": net, "kind": kind, "batch": batch, "dtype": "bfloat16", "mb": nbytes / 1e6}
            for backend in ["torch", *backends]:
                for label, dist in (("all", D.DISTANCES), ("no_style", ("lpips", "spatial", "meanpool"))):
                    i = iter(range(10**9))
                    fn = lambda: pf.fused_distance(*sets[next(i) % len(sets)], distances=dist, lin=lin, backend=backend)  # noqa: E731
                    fn()
                    ms = cuda_time_ms(fn)
                    row[f"{backend}_{label}_ms"] = ms
                    row[f"{backend}_{label}_gbs"] = nbytes / ms / 1e6
            records.append(row)
            rows.append([net, kind, row["mb"]] + [row[f"{b}_all_ms"] for b in ["torch", *backends]]
                        + [100 * row[f"{b}_no_style_gbs"] / bandwidth for b in backends])
    out = Path(os.environ.get("OUT") or Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gpu_check.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    (out / "gpu_check.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "copy_gb_per_s": bandwidth,
                                                    "failures": failures, "rows": records}, indent=2))
    print(f"\ndevice copy bandwidth {bandwidth:.0f} GB/s; batch {batch}, bf16 features, all four distances (ms, median)")
    headers = ["taps of", "kind", "MB"] + [f"{b} ms" for b in ["torch", *backends]] + [f"{b} no-style %BW" for b in backends]
    print(format_table(headers, rows, floatfmt=".2f"))
    print("correctness: " + ("all backends ok" if not failures else "\n  " + "\n  ".join(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
