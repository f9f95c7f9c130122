"""The fused head's backward against autograd through the reference, side by side in one run.

    python bench/head_backward.py [--repeats 7]

At the alexnet and vgg16 tap shapes for 64x64 inputs (batch 64, bench/cases.py), a pair, float32,
the gradient with respect to the first list of maps (a loss's prediction), channels_last (the
Scorer's CPU layout) and NCHW. Each timed call is one ``.backward()`` after an untimed forward:
  fused       backend ``cpp``: kernels/cpu/fused_distance_backward.h (lpips, spatial, meanpool)
  reference   backend ``torch``: autograd through the reference's normalised maps and squares
for lpips alone and for lpips + spatial + meanpool. Bound: the backward kernel reads both lists
and writes one gradient list: 3 x the bytes of one list over the measured copy bandwidth.
Medians of --repeats interleaved calls. Writes bench/results/head_backward.{csv,json}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cases import feature_bytes, tap_features, tap_lin  # noqa: E402
from common import machine_name, write_records  # noqa: E402
from fused_distance import copy_bandwidth_gbs  # noqa: E402

import perceptual_fast as pf  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402

REQUESTS = {"lpips": ("lpips",), "lpips+spatial+meanpool": ("lpips", "spatial", "meanpool")}


def backward_seconds(backend: str, feats, lin, distances) -> float:
    """One backward (gradient w.r.t. feats[0]) after an untimed forward."""
    x = [t.detach().requires_grad_() for t in feats[0]]
    out = pf.fused_distance(x, feats[1], distances=distances, lin=lin, backend=backend)
    total = sum(v.sum() for v in out.values())
    start = time.perf_counter()
    total.backward()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    bandwidth = copy_bandwidth_gbs()
    rows, records = [], []
    for net in ("alexnet", "vgg16"):
        for layout, fmt in (("channels_last", torch.channels_last), ("nchw", torch.contiguous_format)):
            feats = [[t.contiguous(memory_format=fmt) for t in lst] for lst in tap_features(net, 2)]
            lin = tap_lin(feats)
            bound = 3 * feature_bytes(feats[:1]) / (bandwidth * 1e9)
            for label, distances in REQUESTS.items():
                times = {"cpp": [], "torch": []}
                for backend in times:
                    backward_seconds(backend, feats, lin, distances)  # warm-up
                for _ in range(args.repeats):  # interleaved
                    for backend in times:
                        times[backend].append(backward_seconds(backend, feats, lin, distances))
                med = {b: sorted(v)[len(v) // 2] for b, v in times.items()}
                speedup = med["torch"] / med["cpp"]
                rows.append([net, layout, label, 1000 * med["cpp"], 1000 * med["torch"], speedup, 100 * bound / med["cpp"]])
                records.append({"net": net, "layout": layout, "distances": label, "fused_ms": 1000 * med["cpp"],
                                "reference_ms": 1000 * med["torch"], "speedup": speedup, "bound_ms": 1000 * bound,
                                "copy_bandwidth_gb_per_s": bandwidth, "machine": machine_name()})
    print(f"head_backward: gradient w.r.t. the first maps, batch 64 at 64x64 tap shapes, float32; {machine_name()}")
    print(f"measured copy bandwidth {bandwidth:.1f} GB/s; bound = 3 x one list's bytes / bandwidth")
    print(format_table(["net", "layout", "distances", "fused ms", "reference ms", "speed-up", "% of bound"], rows,
                       floatfmt=".2f"))
    write_records("head_backward", records)


if __name__ == "__main__":
    main()
