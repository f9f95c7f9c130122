"""Distance matrices: ``Scorer.pairwise`` against scoring every pair, side by side in one run, and against the GEMM bound.

    flock /tmp/pf_heavy.lock python bench/pairwise.py [--rows 40 --cols 32] [--big 1000] [--repeats 3]

Images: random crops of scikit-image's sample photos at 64x64 (real content), alexnet with random
weights (seed 0) and random lin weights, fp32 trunk, the CPU allocator tuned as the CLI does.
  pairs      ``scorer.distance`` on all rows x cols pairs, 64 pairs per call (2 trunk passes per pair)
  pairwise   ``scorer.pairwise(x, y)``: rows + cols trunk passes, then the cross products
for the four distances (lpips, spatial, meanpool, style); then a --big x --big lpips matrix of one
set against itself, timed in its two stages (embedding = trunk passes, matrix = products), against
the bound: the matrix stage's FLOPs (2 n_i n_j D for the lpips cross term of each tile on or above
the diagonal, D = sum of C HW over the taps) over the best float64 GEMM rate measured here on a
tile's product. The pair loop's
time for the big matrix is its measured per-pair time times N (N - 1) / 2.
Writes bench/results/pairwise.{csv,json}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved, machine_name, median_seconds, photo_crops, write_records  # noqa: E402

import perceptual_fast as pf  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402

FOUR = ("lpips", "spatial", "meanpool", "style")
"""The distances the issue's 20x target names (dists has a trunk of its own: bench/dists.py)."""


def pair_loop(scorer: pf.Scorer, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> None:
    i, j = torch.meshgrid(torch.arange(len(x)), torch.arange(len(y)), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    for start in range(0, len(i), batch):
        scorer.distance(x[i[start:start + batch]], y[j[start:start + batch]])


def gemm_gflops(rows: int, depth: int) -> float:
    """The best float64 GEMM rate of 9 runs of a [rows, depth] x [depth, rows] product (the shape of the
    lpips cross term of one tile): the peak the matrix stage is held against."""
    a = torch.randn(rows, depth, dtype=torch.float64)
    b = torch.randn(rows, depth, dtype=torch.float64)
    a @ b.T
    best = float("inf")
    for _ in range(9):
        start = time.perf_counter()
        a @ b.T
        best = min(best, time.perf_counter() - start)
    return 2 * rows * rows * depth / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--cols", type=int, default=32)
    parser.add_argument("--big", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    allocator = pf.tune_cpu_allocator()
    torch.set_grad_enabled(False)
    machine = machine_name()
    torch.manual_seed(0)
    trunk = pf.load_trunk("alexnet", weights="random", head=False)
    lin = [torch.rand(c) for c in trunk.tap_channels]
    four = pf.Scorer(trunk, lin=lin, distances=FOUR)
    x, y = photo_crops(args.rows, 64, seed=1), photo_crops(args.cols, 64, seed=2)

    # 1. rows x cols, four distances: the pair loop and pairwise, interleaved
    small = interleaved({"pairs": lambda: pair_loop(four, x, y), "pairwise": lambda: four.pairwise(x, y)}, args.repeats)
    pairs = args.rows * args.cols
    got, ref = four.pairwise(x, y), {d: torch.empty(args.rows, args.cols) for d in FOUR}
    for i in range(args.rows):
        d = four.distance(x[i:i + 1].expand(args.cols, -1, -1, -1), y)
        for k in d:
            ref[k][i] = d[k]
    agreement = max(float(((got[k].float() - ref[k]).abs() / ref[k].abs().clamp_min(1e-12)).max()) for k in got)

    # 2. a big x big lpips matrix of one set against itself: embedding, then the products
    lpips = pf.Scorer(trunk, lin=lin, distances=("lpips",))
    z = photo_crops(args.big, 64, seed=3)
    start = time.perf_counter()
    embedding = lpips.embed(z)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    lpips.pairwise(embedding)
    matrix_s = time.perf_counter() - start
    depth = sum(layer.unit.shape[1] for layer in embedding.layers)
    # a set against itself: the tiles on and above the diagonal only (the rest is mirrored)
    sizes = [min(256, args.big - start) for start in range(0, args.big, 256)]
    flops = 2 * depth * sum(sizes[i] * sizes[j] for i in range(len(sizes)) for j in range(i, len(sizes)))
    gflops = max(gemm_gflops(256, layer.unit.shape[1]) for layer in embedding.layers)
    lpips_pair_s = median_seconds(lambda: lpips.distance(z[:64], z[64:128]), args.repeats) / 64
    loop_big_s = lpips_pair_s * args.big * (args.big - 1) / 2

    record = {
        "machine": machine, "allocator": allocator, "rows": args.rows, "cols": args.cols, "repeats": args.repeats,
        "pairs_s": small["pairs"], "pairwise_s": small["pairwise"], "speedup": small["pairs"] / small["pairwise"],
        "trunk_pass_ratio": 2 * pairs / (args.rows + args.cols), "max_rel_diff_vs_distance": agreement,
        "big": args.big, "big_embed_s": embed_s, "big_matrix_s": matrix_s, "big_total_s": embed_s + matrix_s,
        "lpips_depth": depth, "big_matrix_gflop": flops / 1e9, "gemm_fp64_gflop_per_s": gflops,
        "big_matrix_bound_s": flops / 1e9 / gflops, "big_matrix_of_bound": flops / 1e9 / gflops / matrix_s,
        "lpips_pair_ms": 1e3 * lpips_pair_s, "big_pair_loop_estimate_s": loop_big_s,
    }
    print(f"machine: {machine}\nallocator: {allocator}\nalexnet 64x64, random weights, real photo crops; "
          f"median of {args.repeats} interleaved runs\n")
    print(format_table(["case", "pair loop s", "pairwise s", "speed-up", "trunk-pass ratio", "max rel diff"],
                       [[f"{args.rows} x {args.cols}, 4 distances", small["pairs"], small["pairwise"],
                         f"{record['speedup']:.1f}x", f"{record['trunk_pass_ratio']:.1f}x", f"{agreement:.1e}"]],
                       floatfmt=".3f"))
    print()
    print(format_table(["case", "embed s", "matrix s", "total s", "matrix bound s (GFLOP / GEMM GFLOP/s)",
                        "matrix % bound", "pair loop (estimate)"],
                       [[f"{args.big} x {args.big} lpips", embed_s, matrix_s, embed_s + matrix_s,
                         f"{record['big_matrix_bound_s']:.2f} ({flops / 1e9:.0f} / {gflops:.1f})",
                         100 * record["big_matrix_of_bound"], f"{loop_big_s / 60:.1f} min"]], floatfmt=".2f"))
    load = os.getloadavg()[0]
    print(f"1-minute load average at the end: {load:.2f} on {os.cpu_count()} cores (above ~2.2, other work shared the cores)")
    write_records("pairwise", [dict(record, load_avg_1min_end=load)])


if __name__ == "__main__":
    main()
