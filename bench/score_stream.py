"""``perceptual-fast score`` on folders of PNG pairs, side by side in one run with the `lpips` package's
own loop and with the bound.

    python bench/score_stream.py [--pairs 240] [--size 256] [--memory 600,3600]

Throughput (alexnet fp32, random trunk weights, the same in both; start-up excluded):
  ours        perceptual-fast score A B --csv: decode threads feeding the trunk, rows written per batch
  lpips pkg   for each pair: load both images, lpips.im2tensor x2, model(a, b) (its README's loop;
              lpips.load_image needs OpenCV, not installed here, so the loop decodes with PIL)
  threads     in-process: util.pipeline.decoded_batches (2 decode threads) feeding scorer.distance
  DataLoader  in-process: a torch DataLoader with 2 worker processes (its batches of the same pairs)
              feeding scorer.distance: the alternative the pipeline's thread pool was measured against
  bound       the bare trunk's time for all the images at its best layout and batch (forward_taps,
              fp32) + single-thread decode time of all the images spread over the cores
Memory: peak RSS of the whole `score` process (a child of this one) over N pairs of 128x128 PNGs, for
each N in --memory: flat memory means the largest N's peak is within a few % of the smallest's.
Every path runs with ``tune_cpu_allocator()`` (what the command does at startup: util/allocator.py).
Medians of --repeats runs, interleaved. Writes bench/results/score_stream.{csv,json}.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_name, median_seconds, write_records  # noqa: E402

import perceptual_fast as pf  # noqa: E402
from perceptual_fast.util.images import pair_paths, read_image  # noqa: E402
from perceptual_fast.util.pipeline import decoded_batches  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402


def make_pairs(folder: Path, n: int, size: int, seed: int = 0) -> tuple:
    """``n`` pairs of smooth random PNGs (noise upsampled, so they compress like photos) in x/ and y/."""
    rng = np.random.default_rng(seed)
    x, y = folder / "x", folder / "y"
    x.mkdir(parents=True, exist_ok=True)
    y.mkdir(exist_ok=True)
    for i in range(n):
        base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.BILINEAR)
        img.save(x / f"{i:05d}.png")
        noisy = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(y / f"{i:05d}.png")
    return x, y


def run_ours(x: Path, y: Path, out: Path, batch: int, workers: int = 2) -> tuple:
    """(seconds without start-up, peak RSS in MB) of one `score` process."""
    cmd = [sys.executable, "-m", "perceptual_fast.cli", "score", str(x), str(y), "--weights", "random", "--csv", str(out),
           "--batch-size", str(batch), "--workers", str(workers), "--quiet"]
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stderr.write(r.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    done = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True, cwd=out.parent)
    seconds = float(re.search(r"pairs scored, \d+ failed in ([\d.]+) s", done.stderr).group(1))
    return seconds, int(done.stdout.strip()) / 1024


def lpips_loop_seconds(x: Path, y: Path, model) -> float:
    import lpips

    start = time.perf_counter()
    with torch.no_grad():
        for pa in sorted(x.iterdir()):
            a = lpips.im2tensor(np.asarray(Image.open(pa).convert("RGB")))
            b = lpips.im2tensor(np.asarray(Image.open(y / pa.name).convert("RGB")))
            model(a, b)
    return time.perf_counter() - start


class PairFiles(torch.utils.data.Dataset):
    """Pairs of image files for a DataLoader: item i is both images decoded (uint8 ``[3, H, W]`` each)."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        _, pa, pb = self.pairs[i]
        return read_image(pa), read_image(pb)


def in_process_seconds(x: Path, y: Path, scorer: pf.Scorer, batch: int, loader: str) -> float:
    """Decode + score of every pair in this process, with the pipeline's threads or a DataLoader's workers."""
    pairs = pair_paths(x, y)
    start = time.perf_counter()
    if loader == "threads":
        for b in decoded_batches(pairs, batch, workers=2):
            scorer.distance(b.a, b.b)
    else:
        for a, b in torch.utils.data.DataLoader(PairFiles(pairs), batch_size=batch, num_workers=2, prefetch_factor=2):
            scorer.distance(a, b)
    return time.perf_counter() - start


def bound_seconds(x: Path, y: Path, scorer: pf.Scorer, images: torch.Tensor) -> float:
    """Bare trunk over all the images (best of channels_last / contiguous and batch 16 / 32 / 64), plus
    single-thread decode of every file / the core count."""
    n = 2 * len(list(x.iterdir()))
    best = float("inf")
    with torch.no_grad():
        for fmt in (torch.channels_last, torch.contiguous_format):
            trunk = scorer.trunk.to(memory_format=fmt)
            for batch in (16, 32, 64):
                xb = images[:batch].float().div(127.5).sub(1).contiguous(memory_format=fmt)
                t = median_seconds(lambda: trunk.forward_taps(xb), repeats=3)
                best = min(best, t / batch * n)
    files = sorted(x.iterdir())[:32]
    decode = median_seconds(lambda: [read_image(p) for p in files], repeats=3) / len(files) * n
    return best + decode / (os.cpu_count() or 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=240, help="pairs for the throughput runs")
    ap.add_argument("--size", type=int, default=256, help="image side for the throughput runs")
    ap.add_argument("--memory", default="600,3600", help="pair counts of 128x128 PNGs for the memory runs")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", default="2", help="decode threads of `score`, comma-separated to compare several")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    # Every in-process path (and the bound) with the allocator setting the `score` command uses, so
    # that the comparison is of the pipelines, not of glibc settings.
    allocator = pf.tune_cpu_allocator()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x, y = make_pairs(tmp / "speed", args.pairs, args.size)
        scorer = pf.Scorer("alexnet", weights="random")
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = lpips.LPIPS(net="alex", pnet_rand=True, lpips=True, verbose=False).eval()
        images = torch.stack([read_image(p) for p in sorted(x.iterdir())[:64]])
        workers = [int(w) for w in args.workers.split(",")]
        ours = {w: f"ours, {w} decode thread{'s' if w > 1 else ''}" for w in workers}
        loaders = {"threads": "in-process, 2 decode threads", "dataloader": "in-process, DataLoader 2 workers"}
        times = {**{label: [] for label in ours.values()}, **{label: [] for label in loaders.values()}, "lpips": []}
        for _ in range(args.repeats):  # interleaved
            for w, label in ours.items():
                times[label].append(run_ours(x, y, tmp / "speed.csv", args.batch, w)[0])
            for loader, label in loaders.items():
                times[label].append(in_process_seconds(x, y, scorer, args.batch, loader))
            times["lpips"].append(lpips_loop_seconds(x, y, model))
        bound = bound_seconds(x, y, scorer, images)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        rate = {k: args.pairs / v for k, v in med.items()}
        rate["bound"] = args.pairs / bound
        print(f"score_stream: {args.pairs} pairs of {args.size}x{args.size} PNGs, alexnet fp32; {machine_name()}")
        print(format_table(["path", "pairs/s", "vs lpips pkg", "% of bound"],
                           [[k, rate[k], rate[k] / rate["lpips"], 100 * rate[k] / rate["bound"]] for k in rate],
                           floatfmt=".2f"))
        records += [{"kind": "throughput", "path": k, "pairs": args.pairs, "size": args.size, "pairs_per_s": rate[k],
                     "peak_rss_mb": "", "machine": machine_name(), "allocator": allocator} for k in rate]
        mem_rows = []
        for n in (int(v) for v in args.memory.split(",")):
            mx, my = make_pairs(tmp / f"mem{n}", n, 128, seed=n)
            seconds, rss = run_ours(mx, my, tmp / f"mem{n}.csv", args.batch)
            mem_rows.append([n, rss, n / seconds])
            records.append({"kind": "memory", "path": "ours", "pairs": n, "size": 128, "pairs_per_s": n / seconds,
                            "peak_rss_mb": rss, "machine": machine_name(), "allocator": allocator})
        print(format_table(["pairs (128x128)", "peak RSS MB", "pairs/s"], mem_rows, floatfmt=".1f"))
        print(f"peak RSS ratio {mem_rows[-1][0]} / {mem_rows[0][0]} pairs: {mem_rows[-1][1] / mem_rows[0][1]:.3f}")
    write_records("score_stream", records)


if __name__ == "__main__":
    main()
