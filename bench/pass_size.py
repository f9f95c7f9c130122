"""Trunk pass size: the Scorer on packed triplets against the bare torchvision trunk at its best layout and pass size.

    flock /tmp/pf_heavy.lock python bench/pass_size.py [--trunks alexnet,vgg16,squeezenet1_1,resnet50] [--repeats 3]

For each trunk, in one run, round robin (so a busy moment of the machine hits every path alike):
  torchvision  the bare torchvision trunk, fp32 under no_grad: alexnet/vgg16 ``features`` up to the last
               LPIPS tap, squeezenet1_1 ``features``, resnet50 the stem and layer1-4; NCHW and
               channels_last; 192 images of 64x64 in passes of 16 ... 192. Bound = its best images/s.
  ours taps    our ``forward_taps`` (channels_last, the Scorer's CPU layout) in the same passes.
  scorer       ``Scorer.score`` on 64 packed uint8 triplets (3 x 64 = 192 images, one call): pass_size
               "auto" (the table in perceptual_fast/util/passes.py) and None (one 192-image pass).
The distance is lpips for the LPIPS nets and spatial for resnet50. Random weights: speed does not
depend on them. Everything runs twice, each time in a fresh process: with glibc's default
allocator and with ``tune_cpu_allocator()`` (what the CLI does), with the page faults of each.
Writes bench/results/pass_size.{csv,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_name, write_records  # noqa: E402

import perceptual_fast as pf  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402

PASSES = (16, 32, 48, 64, 96, 192)
IMAGES = 192


def torchvision_trunk(name: str) -> torch.nn.Module:
    """The torchvision module that computes what our trunk's taps need, nothing after the last tap."""
    import torchvision

    if name == "alexnet":
        return torchvision.models.alexnet().features[:12]  # relu5 is features[11]
    if name == "vgg16":
        return torchvision.models.vgg16().features[:30]  # relu5_3 is features[29]
    if name == "squeezenet1_1":
        return torchvision.models.squeezenet1_1().features
    if name == "resnet50":
        m = torchvision.models.resnet50()
        return torch.nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
    raise ValueError(f"no torchvision counterpart for {name!r}")


def in_passes(fn, x: torch.Tensor, size: int):
    def run():
        for part in x.split(size):
            fn(part)

    return run


def run_trunk(name: str, repeats: int) -> dict:
    images = torch.randn(IMAGES, 3, 64, 64)
    layouts = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
    bare = {k: torchvision_trunk(name).eval().to(memory_format=f) for k, f in layouts.items()}
    distances = ("lpips",) if name != "resnet50" else ("spatial",)
    lin = "lpips" if name != "resnet50" else None
    scorers = {p: pf.Scorer(name, weights="random", lin=lin, distances=distances, pass_size=p) for p in ("auto", None)}
    ours = scorers[None].trunk
    packed = (torch.rand(3, IMAGES // 3, 3, 64, 64) * 255).to(torch.uint8)
    triplets = {"ref": packed[0], "p0": packed[1], "p1": packed[2]}

    runs = {}
    for layout, fmt in layouts.items():
        x = images.contiguous(memory_format=fmt)
        for p in PASSES:
            runs[("torchvision", layout, p)] = in_passes(bare[layout], x, p)
    x = images.contiguous(memory_format=torch.channels_last)
    for p in PASSES:
        runs[("ours taps", "channels_last", p)] = in_passes(ours.forward_taps, x, p)
    for p, scorer in scorers.items():
        runs[("scorer", f"pass_size={p}", p)] = lambda s=scorer: s.score(triplets)
    times = {k: [] for k in runs}
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.no_grad():
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(repeats):
            for key, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    rate = {k: IMAGES / statistics.median(t) for k, t in times.items()}
    bound_key = max((k for k in rate if k[0] == "torchvision"), key=rate.get)
    taps_key = max((k for k in rate if k[0] == "ours taps"), key=rate.get)
    auto = scorers["auto"].images_per_pass(64, 64)
    return {
        "trunk": name, "distance": distances[0], "images": IMAGES, "repeats": repeats,
        "page_faults_per_run": faults / ((repeats + 1) * len(runs)),
        "bound_images_per_s": rate[bound_key], "bound_case": f"{bound_key[1]} x{bound_key[2]}",
        "ours_taps_best_images_per_s": rate[taps_key], "ours_taps_best_pass": taps_key[2],
        "scorer_auto_pass": auto, "scorer_auto_images_per_s": rate[("scorer", "pass_size=auto", "auto")],
        "scorer_whole_images_per_s": rate[("scorer", "pass_size=None", None)],
        "scorer_auto_of_bound": rate[("scorer", "pass_size=auto", "auto")] / rate[bound_key],
        "scorer_whole_of_bound": rate[("scorer", "pass_size=None", None)] / rate[bound_key],
        "ours_taps_of_bound": rate[taps_key] / rate[bound_key],
        **{f"images_per_s {k[0]} {k[1]} x{k[2]}": v for k, v in rate.items() if k[0] != "scorer"},
    }


def worker(args) -> None:
    """One allocator setting, every trunk; prints the records as JSON."""
    allocator = pf.tune_cpu_allocator() if args.worker == "tuned" else "glibc defaults"
    records = []
    for name in args.trunks.split(","):
        records.append({"allocator": args.worker, "allocator_state": allocator, **run_trunk(name, args.repeats)})
        print(f"done {name} ({args.worker} allocator)", file=sys.stderr)
    print(json.dumps(records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trunks", default="alexnet,vgg16,squeezenet1_1,resnet50")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=("default", "tuned"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    machine = machine_name()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "PERCEPTUAL_FAST_ALLOCATOR"}
    records = []
    for mode in ("default", "tuned"):  # a fresh process each: the allocator setting cannot be undone
        out = subprocess.run([sys.executable, __file__, "--worker", mode, "--trunks", args.trunks, "--repeats",
                              str(args.repeats)], stdout=subprocess.PIPE, text=True, env=env, check=True)
        records += json.loads(out.stdout.strip().splitlines()[-1])
    headers = ["trunk", "allocator", "page faults/run", "bound img/s (torchvision, case)", "ours taps best (pass)",
               "scorer auto (pass)", "auto % bound", "scorer one pass", "one pass % bound"]
    rows = [[r["trunk"], r["allocator"], f"{r['page_faults_per_run']:.0f}", f"{r['bound_images_per_s']:.1f} ({r['bound_case']})",
             f"{r['ours_taps_best_images_per_s']:.1f} (x{r['ours_taps_best_pass']})",
             f"{r['scorer_auto_images_per_s']:.1f} (x{r['scorer_auto_pass'] or 'all'})", 100 * r["scorer_auto_of_bound"],
             f"{r['scorer_whole_images_per_s']:.1f}", 100 * r["scorer_whole_of_bound"]] for r in records]
    print(f"machine: {machine}\n{IMAGES} images of 64x64 (the scorer: {IMAGES // 3} packed triplets), fp32, "
          f"median of {args.repeats} round-robin runs\n")
    print(format_table(headers, rows, floatfmt=".1f"))
    print("\nimages/s by pass size:")
    cases = [("torchvision", "nchw"), ("torchvision", "channels_last"), ("ours taps", "channels_last")]
    rows = [[r["trunk"], r["allocator"], f"{who} {layout}", *[r[f"images_per_s {who} {layout} x{p}"] for p in PASSES]]
            for r in records for who, layout in cases]
    print(format_table(["trunk", "allocator", "path"] + [f"x{p}" for p in PASSES], rows, floatfmt=".1f"))
    load = os.getloadavg()[0]
    print(f"1-minute load average at the end: {load:.2f} on {os.cpu_count()} cores (above ~2.2, other work shared the cores)")
    write_records("pass_size", [{"machine": machine, "load_avg_1min_end": load, **r} for r in records])


if __name__ == "__main__":
    main()
