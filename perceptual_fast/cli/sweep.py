"""``perceptual-fast sweep CKPT... --data BAPPS -o DIR``: score checkpoints on BAPPS 2AFC into one table."""

from __future__ import annotations

import argparse

from ..study.sweep import RESULTS_CSV, RESULTS_JSONL, format_results, run_sweep
from .options import add_scoring_options


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="score many checkpoints on BAPPS 2AFC (resumable; runs under torchrun)")
    p.add_argument("checkpoints", nargs="+", help="checkpoint files, folders or glob patterns (quote globs)")
    p.add_argument("--data", required=True,
                   help="BAPPS pack (perceptual-fast pack) or folder; its 2afc/val part is scored, and its jnd/val part "
                        "(if any) for JND mAP")
    p.add_argument("-o", "--output", required=True, help="folder for results.csv, results.jsonl and done/ records")
    add_scoring_options(p, "spatial,meanpool,style", default_device=None,
                        device_help="cpu, cuda (cuda:<LOCAL_RANK> under torchrun); default cuda if present",
                        default_batch_size=None, batch_size_help="triplets per trunk pass (default: 32 on CPU, 128 on CUDA)")
    p.add_argument("--lin", default=None,
                   help="weights of the lpips or dists distance: 'lpips' / 'dists' (the installed packages' files; dists "
                        "needs dists_vgg16 checkpoints) or a file")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    records = run_sweep(args.checkpoints, args.data, args.distance.split(","), args.output, device=args.device,
                        precision=args.precision, backend=args.backend, batch_size=args.batch_size,
                        progress=not args.quiet, lin=args.lin)
    import torch.distributed as dist

    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if dist.is_initialized():
        dist.destroy_process_group()
    if not rank0:
        return 0  # rank 0 prints the merged table
    print(format_results(records))
    bad = sum(r["status"] != "ok" for r in records)
    print(f"\n{len(records)} checkpoints, {bad} failed; table in {args.output}/{RESULTS_CSV} and {RESULTS_JSONL}")
    return 0
