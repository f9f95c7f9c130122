"""fp32 against bf16 and what ``precision="auto"`` picks, side by side in one run: speed of
``Scorer.score`` on packed triplets, and how many 2AFC decisions bf16 changes.

    python bench/precision.py [--repeats 5] [--triplets 40]

Speed: uint8 triplets of 64x64 (batch 64), random trunk weights, lpips-free distances (spatial,
meanpool, style), per trunk; medians of interleaved calls. Decisions: a SYNTHETIC BAPPS set
(make-bapps, --triplets per category) scored in fp32 and bf16; a decision is which of p0/p1 is
nearer the reference (ties count as their own outcome). Writes bench/results/precision.{csv,json}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_name, write_records  # noqa: E402

import perceptual_fast as pf  # noqa: E402
from perceptual_fast.bapps.pack import load_bapps  # noqa: E402
from perceptual_fast.bapps.synthetic import make_bapps  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402

TRUNKS = ("alexnet", "vgg16", "squeezenet1_1", "resnet50")
DISTANCES = ("spatial", "meanpool", "style")


def decisions_changed(trunk: str, folder: Path) -> tuple:
    """(changed, total) 2AFC decisions of bf16 against fp32 over the set's 2afc/val triplets."""
    part = load_bapps(folder, progress=False).parts["2afc/val"]
    batch = part.batch(0, len(part))
    picks = {}
    for precision in ("fp32", "bf16"):
        r = pf.Scorer(trunk, weights="random", distances=DISTANCES, precision=precision).score(batch)
        picks[precision] = {d: torch.sign(r["d1"][d] - r["d0"][d]) for d in DISTANCES}
    changed = sum(int((picks["fp32"][d] != picks["bf16"][d]).sum()) for d in DISTANCES)
    return changed, len(part) * len(DISTANCES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--triplets", type=int, default=40, help="SYNTHETIC triplets per category for the decisions")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    warnings.simplefilter("ignore")  # the emulated-bf16 warning, on CPUs that have it, is the point of the table
    auto = pf.Scorer("alexnet", weights="random", precision="auto").precision
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.randint(0, 256, (64, 3, 64, 64), generator=g, dtype=torch.uint8) for k in ("ref", "p0", "p1")}
    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_bapps(Path(tmp) / "bapps", triplets=args.triplets, jnd=0, progress=False)
        for trunk in TRUNKS:
            scorers = {p: pf.Scorer(trunk, weights="random", distances=DISTANCES, precision=p) for p in ("fp32", "bf16")}
            times = {p: [] for p in scorers}
            for s in scorers.values():
                s.score(batch)  # warm-up
            for _ in range(args.repeats):
                for p, s in scorers.items():
                    start = time.perf_counter()
                    s.score(batch)
                    times[p].append(time.perf_counter() - start)
            rate = {p: 64 / sorted(v)[len(v) // 2] for p, v in times.items()}
            changed, total = decisions_changed(trunk, folder)
            rows.append([trunk, rate["fp32"], rate["bf16"], rate["bf16"] / rate["fp32"], auto, rate[auto] / rate["fp32"],
                         f"{changed}/{total}"])
            records.append({"trunk": trunk, "fp32_triplets_per_s": rate["fp32"], "bf16_triplets_per_s": rate["bf16"],
                            "auto": auto, "auto_vs_fp32": rate[auto] / rate["fp32"], "decisions_changed": changed,
                            "decisions": total, "machine": machine_name()})
    print(f"precision: Scorer.score on 64 uint8 triplets of 64x64; auto picks {auto} here; {machine_name()}")
    print(format_table(["trunk", "fp32 /s", "bf16 /s", "bf16 / fp32", "auto", "auto / fp32", "2AFC changed by bf16"],
                       rows, floatfmt=".2f"))
    write_records("precision", records)


if __name__ == "__main__":
    main()
