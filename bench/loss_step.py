"""A perceptual loss's training step, forward + backward with respect to the prediction only, side by
side in one run: the drop-in ``pf.LPIPS``, the same with the target's features reused
(``scorer.target``), and the ``lpips`` package's ``lpips.LPIPS``, with the same trunk and lin weights.

    python bench/loss_step.py [--repeats 5]

Cases: alexnet 256x256 batch 8, vgg16 128x128 batch 4 (fp32, random trunk weights, lin v0.1).
Time: median of --repeats interleaved steps after one warm-up. Memory: peak RSS of a child process
that builds the model and runs 3 steps (the process baseline, torch loaded, included in each).
Bound: the trunk alone (no head) forward + backward for the prediction (a dense gradient per tap,
in the tap's layout), target under no_grad.
Writes bench/results/loss_step.{csv,json}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_name, write_records  # noqa: E402

import perceptual_fast as pf  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402

CASES = [("alex", 256, 8), ("vgg", 128, 4)]
WAYS = ("lpips package", "pf.LPIPS", "pf target reused", "bound: trunk only")


def build(way: str, net: str):
    """A function ``step(x, y)`` running one forward + backward of ``way``'s loss."""
    ours = pf.LPIPS(net=net, pnet_rand=True)
    if way == "pf.LPIPS":
        return lambda x, y: ours(x, y).sum().backward()
    if way == "pf target reused":
        scorer = ours.scorer
        cache = {}

        def step(x, y):
            target = cache.setdefault(id(y), scorer.target(y))
            scorer.distance(x, target)["lpips"].sum().backward()

        return step
    if way == "bound: trunk only":
        scorer = ours.scorer

        def trunk_only(x, y):
            with torch.no_grad():
                scorer.features(y)
            taps = scorer.features(x)
            # a dense gradient in each tap's own layout, as a head gives (a mean's expanded one is slower)
            torch.autograd.backward(taps, [torch.ones_like(t) for t in taps])

        return trunk_only
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
    trunk = ours.net.features.state_dict()  # lpips names its slices net.sliceK.<torchvision index>.<param>
    model.net.load_state_dict({k: trunk[".".join(k.split(".")[1:])] for k in model.net.state_dict()})
    return lambda x, y: model(x, y).sum().backward()


def inputs(size: int, batch: int):
    g = torch.Generator().manual_seed(0)
    y = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    x = (y + 0.1 * torch.randn(y.shape, generator=g)).clamp(-1, 1)
    return x, y


def timed(step, x, y) -> float:
    x = x.clone().requires_grad_(True)
    start = time.perf_counter()
    step(x, y)
    return time.perf_counter() - start


def child_peak_rss(way: str, net: str, size: int, batch: int) -> float:
    """Peak RSS in MB of a fresh process that builds ``way`` and runs 3 steps."""
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child would report this big parent's peak
    code = ("import re, sys; sys.path.insert(0, %r); import loss_step as b; "
            "s = b.build(%r, %r); x, y = b.inputs(%d, %d); [b.timed(s, x, y) for _ in range(3)]; "
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
            ) % (str(Path(__file__).parent), way, net, size, batch)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    records, rows = [], []
    for net, size, batch in CASES:
        x, y = inputs(size, batch)
        steps = {way: build(way, net) for way in WAYS}
        for step in steps.values():
            timed(step, x, y)  # warm-up
        times = {way: [] for way in WAYS}
        for _ in range(args.repeats):  # interleaved
            for way, step in steps.items():
                times[way].append(timed(step, x, y))
        med = {way: sorted(v)[len(v) // 2] for way, v in times.items()}
        for way in WAYS:
            rss = child_peak_rss(way, net, size, batch)
            speedup = med["lpips package"] / med[way]
            rows.append([f"{net} {size}px b{batch}", way, 1000 * med[way], speedup, rss])
            records.append({"net": net, "size": size, "batch": batch, "way": way, "ms": 1000 * med[way],
                            "speedup_vs_lpips": speedup, "peak_rss_mb": rss, "machine": machine_name()})
    print(f"loss_step: forward + backward w.r.t. the prediction, fp32; {machine_name()}")
    print(format_table(["case", "way", "ms", "vs lpips pkg", "peak RSS MB"], rows, floatfmt=".2f"))
    write_records("loss_step", records)


if __name__ == "__main__":
    main()
