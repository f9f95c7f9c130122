"""The fused distance op's benchmark on this CPU: every provider that runs here (PROVIDERS: the
cpp kernel, and the torch reference composite it is measured against), all four distances at once,
pairs and triplets at real tap shapes, side by side in one run.

    python bench/fused_distance.py     # table; bench/results/fused_distance.{csv,json}

Reports the median wall time over repeats and the speedup over torch; for the memory-bound part
(every distance but style) GB/s = feature bytes read once / time against this machine's measured
memory bandwidth (a large copy: read + write bytes / time); for the compute-bound Gram stage,
GFLOP/s. The GPU providers (triton, cuda) are timed by bench/gpu_check.py on a GPU machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cases import BATCH, POINTWISE, TAP_SHAPES, feature_bytes, runner, style_flops, tap_features  # noqa: E402
from common import machine_name, median_seconds, write_records  # noqa: E402

from perceptual_fast.util.tables import format_table  # noqa: E402

PROVIDERS = ("torch", "cpp")
"""The op's implementations timed here, the reference first (the speedup is over it)."""


def copy_bandwidth_gbs(megabytes: int = 512) -> float:
    """Measured memory bandwidth: bytes read + written by a large copy, per second."""
    src = torch.rand(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), repeats=7, warmup=2)
    return 2 * src.numel() * 4 / seconds / 1e9


def main() -> None:
    torch.set_grad_enabled(False)
    bandwidth = copy_bandwidth_gbs()
    rows, records = [], []
    for net in TAP_SHAPES:
        for count, kind in ((2, "pair"), (3, "triplet")):
            feats = tap_features(net, count)
            nbytes = feature_bytes(feats)
            t = {p: median_seconds(runner(p, feats), repeats=3 if p == "torch" else 7) for p in PROVIDERS}
            t_ref, t_cpp = t["torch"], t["cpp"]
            t_pw = median_seconds(runner("cpp", feats, POINTWISE), repeats=7)
            gbs = nbytes / t_pw / 1e9
            gflops = style_flops(net, count) / t_cpp / 1e9
            rows.append([net, kind, nbytes / 1e6, 1e3 * t_ref, 1e3 * t_cpp, t_ref / t_cpp, 1e3 * t_pw, gbs,
                         100 * gbs / bandwidth, gflops])
            records.append({"net": net, "kind": kind, "batch": BATCH, "distances": "lpips+spatial+meanpool+style",
                            "feature_mb": nbytes / 1e6, "torch_ms": 1e3 * t_ref, "cpp_ms": 1e3 * t_cpp,
                            "speedup": t_ref / t_cpp, "cpp_no_style_ms": 1e3 * t_pw,
                            "cpp_no_style_gb_per_s": gbs, "copy_bandwidth_gb_per_s": bandwidth,
                            "style_gflop_per_s": gflops, "machine": machine_name()})
            print(f"  {net} {kind}: torch {1e3 * t_ref:.1f} ms, cpp {1e3 * t_cpp:.1f} ms", file=sys.stderr)
    print(f"fused_distance, all four distances, all layers, batch {BATCH}, 64x64 inputs; {machine_name()}")
    print(f"measured copy bandwidth: {bandwidth:.1f} GB/s (read + write of 512 MiB)\n")
    headers = ["taps of", "kind", "MB read", "torch ms", "cpp ms", "speedup", "no-style ms", "no-style GB/s", "% copy BW",
               "style GFLOP/s*"]
    print(format_table(headers, rows, floatfmt=".2f"))
    print("\nno-style: lpips + spatial + meanpool only (memory-bound; features read once). * channel-form Gram FLOPs of the")
    print("upper triangle / total cpp time: a lower bound on the style stage's rate (tiny maps use the cheaper position form).")
    write_records("fused_distance", records)

if __name__ == "__main__":
    main()
