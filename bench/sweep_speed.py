"""Checkpoint-sweep throughput on this CPU: `run_sweep` against a naive per-checkpoint loop.

    flock /tmp/pf_heavy.lock python bench/sweep_speed.py [--triplets 40] [--checkpoints resnet6=8,resnet50=3]

Data: a SYNTHETIC BAPPS folder (make-bapps: 5 categories x --triplets, 256x256 PNGs), and its
64x64 pack. Checkpoints: randomly initialised trunks (a different seed each) saved with their
configs (save_trunk); weights do not change the work. Distances: spatial, meanpool, style.
  sweep   perceptual_fast.study.sweep.run_sweep over the pack: images decoded once and kept in memory
          for every checkpoint, the next checkpoint loaded in a background thread while one is
          scored, one trunk pass per image, all distances from one fused op (batch 32 triplets on CPU)
  naive   per checkpoint: read and resize the PNG folder again (read_bapps), build a Scorer from
          the file, call scorer.score on batches of 64 triplets, 2AFC per category
Both give the same per-category 2AFC (checked). Median of --repeats timed runs, taken round robin after one
warm-up checkpoint (the sweep's time includes loading and checking the pack).
Writes bench/results/sweep_speed.{csv,json}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_name, write_records  # noqa: E402

import perceptual_fast as pf  # noqa: E402
from perceptual_fast.bapps.pack import pack_folder  # noqa: E402
from perceptual_fast.bapps.reader import read_bapps  # noqa: E402
from perceptual_fast.bapps.synthetic import make_bapps  # noqa: E402
from perceptual_fast.metrics import category_means, two_afc  # noqa: E402
from perceptual_fast.study.sweep import run_sweep  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402

DISTANCES = ("spatial", "meanpool", "style")


def naive_scores(folder: Path, checkpoint: Path) -> dict:
    """The naive loop for one checkpoint: PNGs decoded again, a Scorer, per-batch scorer.score calls."""
    part = read_bapps(folder, size=64, splits=("val",)).parts["2afc/val"].materialized()
    scorer = pf.Scorer(str(checkpoint), distances=DISTANCES)
    agree = {d: [] for d in DISTANCES}
    with torch.no_grad():
        for start in range(0, len(part), 64):
            batch = part.batch(start, min(start + 64, len(part)))
            r = scorer.score({"ref": batch["ref"], "p0": batch["p0"], "p1": batch["p1"], "judge": batch["judge"]})
            for d in DISTANCES:
                agree[d].append(two_afc(r["d0"][d], r["d1"][d], batch["judge"]))
    k = len(part.categories)
    return {d: category_means(torch.cat(v), part.category, k).tolist() for d, v in agree.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--triplets", type=int, default=40, help="SYNTHETIC triplets per category (5 categories)")
    ap.add_argument("--checkpoints", default="resnet6=8,resnet50=3", help="trunk=count, comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each method (median)")
    args = ap.parse_args()
    plan = [(name, int(n)) for name, n in (item.split("=") for item in args.checkpoints.split(","))]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_bapps(tmp / "bapps", triplets=args.triplets, jnd=0, progress=False)
        pack = pack_folder(folder, tmp / "bapps.safetensors", size=64, progress=False)
        triplets = 5 * args.triplets
        for name, count in plan:
            ckpts = []
            for seed in range(count + 1):  # +1: the warm-up checkpoint
                path = tmp / name / f"seed{seed}.safetensors"
                path.parent.mkdir(exist_ok=True)
                pf.save_trunk(pf.load_trunk(name, weights="random", seed=seed, head=False), path)
                ckpts.append(path)
            warm, timed = ckpts[0], ckpts[1:]
            run_sweep([str(warm)], pack, DISTANCES, tmp / f"warm_{name}", device="cpu", progress=False)
            naive_scores(folder, warm)
            sweep_times, naive_times = [], []
            for rep in range(args.repeats):  # round robin, so drifts of the machine hit both alike
                start = time.perf_counter()
                swept = run_sweep([str(p) for p in timed], pack, DISTANCES, tmp / f"sweep_{name}_{rep}", device="cpu",
                                  progress=False)
                sweep_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                naive = [naive_scores(folder, p) for p in timed]
                naive_times.append(time.perf_counter() - start)
            sweep_s, naive_s = statistics.median(sweep_times), statistics.median(naive_times)
            for rec, ref in zip(swept, naive):
                for d in DISTANCES:
                    got = list(rec["two_afc"][d].values())
                    assert max(abs(a - b) for a, b in zip(got, ref[d])) < 1e-9, (name, d, got, ref[d])
            for method, seconds in (("sweep", sweep_s), ("naive", naive_s)):
                records.append({"trunk": name, "method": method, "checkpoints": count, "triplets": triplets,
                                "seconds": round(seconds, 3), "checkpoints_per_min": round(60 * count / seconds, 2),
                                "triplets_per_s": round(count * triplets / seconds, 1),
                                "speedup": round(naive_s / seconds, 2) if method == "sweep" else 1.0})
    write_records("sweep_speed", records)
    print(f"sweep throughput, 64x64, distances {','.join(DISTANCES)}, {machine_name()}")
    print(format_table(list(records[0]), [list(r.values()) for r in records], floatfmt=".2f"))


if __name__ == "__main__":
    main()
