"""DISTS: ``Scorer("dists_vgg16", lin="dists")`` against the ``DISTS_pytorch`` package, and the fused
moments against the reference head, side by side in one run.

    flock /tmp/pf_heavy.lock python bench/dists.py [--sizes 128 256] [--triplets 8] [--repeats 3]

Images: crops of scikit-image's sample photos at each of --sizes (a reference, a noised and a blurred copy
per triplet), the same random VGG-16 (seed 0) in both, the package's own alpha/beta, fp32, the
CPU allocator tuned as the CLI does. Every timing is the median of --repeats interleaved runs.

  end to end   ``scorer.score`` of the triplets (one trunk pass over ref, p0 and p1: 3 images a
               triplet) against the package called twice per triplet, ``(ref, p0)`` and
               ``(ref, p1)`` (4 images). Bound: the package's 4 VGG passes over our 3, both at our
               trunk's speed, i.e. 4/3 if the head and preprocessing cost nothing.
  trunks       our ``forward_taps`` on 3N images and the package's ``forward_once`` on 4N: where the
               end-to-end ratio comes from.
  head         the fused op on one triplet batch of taps (the cpp kernel: a vs b and a vs c in one
               call, the reference read once) against the reference head (``reference.layer_terms``
               for a-b and a-c, plain PyTorch, float32) on the same taps.
Writes bench/results/dists.{csv,json}.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import interleaved, machine_name, photo_crops, write_records  # noqa: E402
from dists_package import package_dists  # noqa: E402  (the parity test's wiring of the package)

import perceptual_fast as pf  # noqa: E402
from perceptual_fast.ops.fused_distance import reference  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402


def triplets(count: int, side: int) -> dict:
    """Reference crops and two distortions each, as [0, 1] float images ``[N, 3, side, side]``."""
    ref = photo_crops(count, side, seed=1).float() / 255
    g = torch.Generator().manual_seed(2)
    p0 = (ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    p1 = torch.nn.functional.avg_pool2d(ref, 3, stride=1, padding=1, count_include_pad=False)
    return {"ref": ref, "p0": p0, "p1": p1}


def measure(scorer: pf.Scorer, model: torch.nn.Module, size: int, n: int, repeats: int) -> dict:
    """One image size: the end-to-end, trunk and head timings and the agreement with the package."""
    batch = triplets(n, size)
    ours = scorer.score(batch)
    theirs = [model(batch["ref"], batch[k]) for k in ("p0", "p1")]
    agreement = max(float((ours[d]["dists"] - t).abs().max()) for d, t in zip(("d0", "d1"), theirs))
    end_to_end = interleaved({
        "scorer": lambda: scorer.score(batch),
        "package": lambda: [model(batch["ref"], batch[k]) for k in ("p0", "p1")],
    }, repeats)
    scaled = scorer._scaled({k: batch[k] for k in ("ref", "p0", "p1")})  # what the trunk receives
    unit = torch.cat([batch[k] for k in ("ref", "p0", "ref", "p1")])
    trunks = interleaved({
        "ours": lambda: scorer.trunk.forward_taps(scaled),
        "package": lambda: model.forward_once(unit),
    }, repeats)
    taps = [t.split(n) for t in scorer.trunk.forward_taps(scaled)]
    a, b, c = ([t[k] for t in taps] for k in range(3))
    weights = scorer.dists_weights
    head = interleaved({
        "fused": lambda: pf.fused_distance(a, b, c, distances=("dists",), dists_weights=weights, backend="cpp"),
        "reference": lambda: [reference.layer_terms(a, x, ("dists",), dists_weights=weights) for x in (b, c)],
    }, repeats)
    tap_bytes = sum(t.numel() * t.element_size() for t in a + b + c)
    speedup = end_to_end["package"] / end_to_end["scorer"]
    trunk_ratio = trunks["package"] / trunks["ours"]
    return {
        "size": size, "triplets": n, "repeats": repeats,
        "scorer_s": end_to_end["scorer"], "package_s": end_to_end["package"], "speedup": speedup,
        "scorer_triplets_per_s": n / end_to_end["scorer"], "package_triplets_per_s": n / end_to_end["package"],
        "our_trunk_3n_s": trunks["ours"], "package_trunk_4n_s": trunks["package"],
        "trunk_ratio_bound": trunk_ratio, "speedup_of_bound": speedup / trunk_ratio,
        "fused_head_ms": 1e3 * head["fused"], "reference_head_ms": 1e3 * head["reference"],
        "head_speedup": head["reference"] / head["fused"], "head_tap_mb": tap_bytes / 1e6,
        "fused_head_gb_per_s": tap_bytes / head["fused"] / 1e9, "max_abs_diff_vs_package": agreement,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--triplets", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    allocator = pf.tune_cpu_allocator()
    torch.set_grad_enabled(False)
    machine = machine_name()
    scorer = pf.Scorer("dists_vgg16", weights="random", lin="dists", distances=("dists",), input_range="0,1")
    model = package_dists(scorer.trunk)
    records = [dict(machine=machine, allocator=allocator, **measure(scorer, model, size, args.triplets, args.repeats))
               for size in args.sizes]
    print(f"machine: {machine}\nallocator: {allocator}\ndists_vgg16 (random VGG-16, the package's alpha/beta), "
          f"{args.triplets} triplets of photo crops, fp32; median of {args.repeats} interleaved runs\n")
    print(format_table(
        ["size", "Scorer.score s", "DISTS_pytorch x2 s", "speed-up", "bound (trunks 4N/3N)", "% of bound",
         "triplets/s"],
        [[r["size"], r["scorer_s"], r["package_s"], f"{r['speedup']:.2f}x", f"{r['trunk_ratio_bound']:.2f}x",
          f"{100 * r['speedup_of_bound']:.0f}", r["scorer_triplets_per_s"]] for r in records], floatfmt=".3f"))
    print("\nScorer.score: one trunk pass over ref, p0, p1 (3 images a triplet); the package: (ref, p0) and (ref, p1)\n")
    print(format_table(
        ["size", "fused moments ms (cpp, triplet)", "reference head ms (torch, 2 pairs)", "speed-up", "taps MB",
         "fused GB/s"],
        [[r["size"], r["fused_head_ms"], r["reference_head_ms"], f"{r['head_speedup']:.1f}x", r["head_tap_mb"],
          r["fused_head_gb_per_s"]] for r in records], floatfmt=".2f"))
    print(f"\nlargest |Scorer - package| over the triplets: {max(r['max_abs_diff_vs_package'] for r in records):.1e}")
    load = os.getloadavg()[0]
    print(f"1-minute load average at the end: {load:.2f} on {os.cpu_count()} cores (above ~2.2, other work shared the cores)")
    write_records("dists", [dict(r, load_avg_1min_end=load) for r in records])


if __name__ == "__main__":
    main()
