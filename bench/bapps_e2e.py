"""End-to-end BAPPS-style scoring on this CPU, side by side in one run with the `lpips` package.

    flock /tmp/pf_heavy.lock python bench/bapps_e2e.py [--triplets 240] [--trunks alexnet,vgg16]

Data: a SYNTHETIC BAPPS folder (make-bapps, 256x256 PNGs) packed at 64x64 and memory-mapped:
the same uint8 triplets feed every path. Trunk weights: random (seed 0), the same in both.
  ours fp32   evaluate_bapps: one trunk pass over ref/p0/p1 per batch, fused lpips distance, 2AFC
  ours bf16   the same with precision="bf16" (trunk under CPU bfloat16 autocast)
  lpips pkg   lpips.LPIPS(net, lpips=True) called twice per triplet (ref/p0, ref/p1: 4 trunk passes), 2AFC
  bound       images/s of the bare trunk (forward_taps, fp32) in its fastest memory layout and pass size, / 3
Median of --repeats timed runs, taken round robin after one warm-up. Writes bench/results/bapps_e2e.{csv,json}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_name, median_seconds, write_records  # noqa: E402

import perceptual_fast as pf  # noqa: E402
from perceptual_fast.bapps.evaluate import evaluate_bapps  # noqa: E402
from perceptual_fast.bapps.pack import load_bapps, pack_folder  # noqa: E402
from perceptual_fast.bapps.reader import Bapps, BappsPart  # noqa: E402
from perceptual_fast.bapps.synthetic import make_bapps  # noqa: E402
from perceptual_fast.metrics import two_afc  # noqa: E402
from perceptual_fast.preprocess import lpips_scaling  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402

LPIPS_NET = {"alexnet": "alex", "vgg16": "vgg"}
BATCH = {"alexnet": 48, "vgg16": 16}  # triplets per batch: 144 / 48 images per trunk pass, the faster sizes here


def lpips_model(scorer: pf.Scorer, trunk: str):
    """The `lpips` package's LPIPS with our trunk's weights (its slices index torchvision's `features`)."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=LPIPS_NET[trunk], pnet_rand=True, lpips=True, verbose=False)
    ours = scorer.trunk.features.state_dict()
    model.net.load_state_dict({k: ours[".".join(k.split(".")[1:])] for k in model.net.state_dict()}, strict=True)
    return model.eval()


def lpips_path(model, part, batch: int):
    """The lpips package's way: float [-1, 1] images, two LPIPS calls per triplet. Returns (d0, d1) [N]."""
    d0, d1 = [], []
    for start in range(0, len(part), batch):
        b = part.batch(start, min(start + batch, len(part)))
        ref, p0, p1 = (b[k].float() / 127.5 - 1 for k in ("ref", "p0", "p1"))
        d0.append(model(ref, p0).flatten())
        d1.append(model(ref, p1).flatten())
    return torch.cat(d0), torch.cat(d1)


def trunk_bound(scorer: pf.Scorer) -> tuple:
    """The bare fp32 trunk's best images/s over memory layouts and pass sizes (48 or 144 images):
    (images/s, "layout x images", {that label: images/s} for every case)."""
    rates = {}
    for images in (48, 144):
        x = lpips_scaling(torch.rand(images, 3, 64, 64) * 2 - 1)
        for layout, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
            xs = x.contiguous(memory_format=fmt)
            rates[f"{layout} x{images}"] = images / median_seconds(lambda: scorer.trunk.forward_taps(xs), repeats=7, warmup=2)
    best = max(rates, key=rates.get)
    return rates[best], best, rates


def decisions(d0, d1):
    return torch.sign(d1.double() - d0.double())


def first(data, n: int):
    """The first n triplets of 2afc/val as a data set of its own (views, no copy)."""
    p = data.parts["2afc/val"]
    part = BappsPart(p.task, p.split, {k: v[:n] for k, v in p.images.items()}, p.target[:n], p.category[:n], p.categories,
                     p.names[:n])
    return Bapps({"2afc/val": part}, data.size, data.source, data.synthetic, data.note)


def run_trunk(trunk: str, data, batch: int, args) -> dict:
    part = data.parts["2afc/val"]
    n = len(part)
    scorers = {
        "ours_fp32": pf.Scorer(trunk, weights="random", lin="lpips", distances=("lpips",)),
        "ours_bf16": pf.Scorer(trunk, weights="random", lin="lpips", distances=("lpips",), precision="bf16"),
        "ours_fp32_4dist": pf.Scorer(trunk, weights="random", lin="lpips", distances=("lpips", "spatial", "meanpool", "style")),
    }
    model = lpips_model(scorers["ours_fp32"], trunk)
    runs = {name: (lambda s=s: evaluate_bapps(data, s, batch_size=batch, progress=False)) for name, s in scorers.items()}
    runs["lpips"] = lambda: lpips_path(model, part, batch)
    out = {name: fn() for name, fn in runs.items()}  # warm-up, and the distances compared below
    times = {name: [] for name in runs}
    for _ in range(args.repeats):  # round robin, so that a busy moment of the machine hits every path alike
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rate = {name: n / statistics.median(t) for name, t in times.items()}
    bound_images, layout, layouts = trunk_bound(scorers["ours_fp32"])
    bound = bound_images / 3
    d32, d16 = out["ours_fp32"].parts["2afc/val"].distances, out["ours_bf16"].parts["2afc/val"].distances
    ref0, ref1 = out["lpips"]
    differ = int((decisions(d32["d0"]["lpips"], d32["d1"]["lpips"]) != decisions(d16["d0"]["lpips"], d16["d1"]["lpips"])).sum())
    return {
        "trunk": trunk, "triplets": n, "batch": batch, "repeats": args.repeats,
        **{f"{name}_triplets_per_s": r for name, r in rate.items()},
        "trunk_bound_triplets_per_s": bound, "trunk_bound_layout": layout,
        **{f"trunk_images_per_s {case}": v for case, v in layouts.items()},
        "fp32_vs_lpips": rate["ours_fp32"] / rate["lpips"], "bf16_vs_lpips": rate["ours_bf16"] / rate["lpips"],
        "fp32_of_bound": rate["ours_fp32"] / bound, "lpips_of_bound": rate["lpips"] / bound,
        "bf16_of_bound": rate["ours_bf16"] / bound,
        "bf16_decisions_differ": differ, "bf16_decisions_differ_pct": 100 * differ / n,
        "2afc_ours_fp32": float(two_afc(d32["d0"]["lpips"], d32["d1"]["lpips"], part.target).mean()),
        "2afc_lpips_pkg": float(two_afc(ref0, ref1, part.target).mean()),
        "2afc_decisions_differ_ours_vs_lpips": int((decisions(d32["d0"]["lpips"], d32["d1"]["lpips"])
                                                     != decisions(ref0, ref1)).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=240, help="2afc/val triplets in all (5 categories)")
    parser.add_argument("--vgg-triplets", type=int, default=96, help="the first N of them for vgg16 (slow on a CPU)")
    parser.add_argument("--trunks", default="alexnet,vgg16")
    parser.add_argument("--batch", type=int, default=None,
                        help="triplets per batch, both paths (default: alexnet 48, vgg16 16: fastest pass sizes here)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    flags = sorted(set(w for w in Path("/proc/cpuinfo").read_text().split() if w.startswith("amx") or w == "avx512_bf16")) \
        if Path("/proc/cpuinfo").exists() else []
    machine = f"{machine_name()}, bf16 CPU flags: {' '.join(flags) or 'none'}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_bapps(Path(tmp) / "bapps", triplets=args.triplets // 5, jnd=0, progress=False)
        data = load_bapps(pack_folder(folder, Path(tmp) / "bapps.safetensors", progress=False), progress=False)
        records = []
        for trunk in args.trunks.split(","):
            batch = args.batch or BATCH.get(trunk, 48)
            records.append(run_trunk(trunk, first(data, args.vgg_triplets) if trunk == "vgg16" else data, batch, args))
            print(f"done {trunk}", file=sys.stderr)
    headers = ["trunk", "batch", "lpips pkg t/s", "ours fp32 t/s", "fp32 / lpips", "bound t/s (layout)", "fp32 % bound",
               "lpips % bound", "ours bf16 t/s", "bf16 / lpips", "bf16 decisions differ", "ours fp32 4 dist t/s"]
    rows = [[r["trunk"], r["batch"], r["lpips_triplets_per_s"], r["ours_fp32_triplets_per_s"], f"{r['fp32_vs_lpips']:.2f}x",
             f"{r['trunk_bound_triplets_per_s']:.1f} ({r['trunk_bound_layout']} img)", 100 * r["fp32_of_bound"],
             100 * r["lpips_of_bound"], r["ours_bf16_triplets_per_s"], f"{r['bf16_vs_lpips']:.2f}x",
             f"{r['bf16_decisions_differ']}/{r['triplets']} ({r['bf16_decisions_differ_pct']:.2f}%)",
             r["ours_fp32_4dist_triplets_per_s"]] for r in records]
    print(f"machine: {machine}\nSYNTHETIC BAPPS-style triplets at 64x64, lpips distance, random weights; "
          f"median of {args.repeats} runs; t/s = triplets per second\n")
    print(format_table(headers, rows, floatfmt=".1f"))
    for r in records:
        print(f"{r['trunk']}: 2AFC ours fp32 {r['2afc_ours_fp32']:.6f}, lpips package {r['2afc_lpips_pkg']:.6f} "
              f"({r['2afc_decisions_differ_ours_vs_lpips']} decisions differ); "
              "bare trunk images/s: " + ", ".join(f"{k[19:]} {v:.1f}" for k, v in r.items()
                                                  if k.startswith("trunk_images_per_s")))
    load = os.getloadavg()[0]
    print(f"1-minute load average at the end: {load:.2f} on {os.cpu_count()} cores (above ~2.2, other work shared the cores)")
    write_records("bapps_e2e", [{"machine": machine, "load_avg_1min_end": load, **r} for r in records])


if __name__ == "__main__":
    main()
