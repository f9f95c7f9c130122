"""Options shared by the commands that score with a Scorer (score, bapps, sweep), and ``build_scorer``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ..ops.fused_distance import DISTANCES
from ..scorer import Scorer
from ..trunks import list_trunks
from ..util.precision import PRECISIONS


def trunk_argument(value: str) -> str:
    """--trunk: a registry name or an existing file."""
    if value in list_trunks() or Path(value).is_file():
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is neither a trunk name ({', '.join(list_trunks())}) nor an existing archive or checkpoint file"
    )


def add_trunk_options(p: argparse.ArgumentParser, default_weights: Optional[str]) -> None:
    """--trunk, --weights, --seed, --lin: which trunk the Scorer runs and with which weights."""
    p.add_argument(
        "--trunk",
        default="alexnet",
        type=trunk_argument,
        help="a registry name (default: alexnet; see perceptual_fast.list_trunks()), or the path of an exported "
        "trunk (perceptual-fast export: .pt2 or TorchScript) or of a checkpoint that carries its trunk config",
    )
    p.add_argument(
        "--weights",
        default=default_weights,
        help="trunk weights: a local file (.safetensors/.pt/.pth/.pt2/TorchScript), 'torchvision' (torch hub cache) "
        "or 'random' (seeded); nothing is downloaded",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --weights random (default: 0)")
    p.add_argument("--lin", default=None, help="weights of the lpips or dists distance: a file, 'lpips' or 'dists' "
                                                "(the installed lpips / DISTS_pytorch package's file)")


def add_scoring_options(p: argparse.ArgumentParser, default_distances: str, *, default_device: Optional[str] = "cpu",
                        device_help: str = "torch device for the trunk (default: cpu)", default_batch_size: Optional[int] = 32,
                        batch_size_help: str = "images scored per trunk pass (default: 32)") -> None:
    """--distance, --backend, --device, --precision, --batch-size: what the Scorer computes, where and how."""
    p.add_argument("--distance", default=default_distances, help=f"comma-separated, from {','.join(DISTANCES)}")
    p.add_argument("--backend", default="auto", help="auto, cpp or torch (PERCEPTUAL_FAST_BACKEND overrides)")
    p.add_argument("--device", default=default_device, help=device_help)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (default), fp64, bf16 (trunk under bfloat16 autocast, distances in float32), fp16 "
                        "(CUDA), or auto (bf16 where the hardware runs it faster, else fp32)")
    p.add_argument("--batch-size", type=int, default=default_batch_size, help=batch_size_help)


def add_scorer_options(p: argparse.ArgumentParser, default_distances: str, default_weights: Optional[str]) -> None:
    """Every option of a command that builds its Scorer with ``build_scorer``, and --json."""
    add_trunk_options(p, default_weights)
    add_scoring_options(p, default_distances)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def build_scorer(args: argparse.Namespace) -> Scorer:
    return Scorer(
        args.trunk,
        weights=args.weights,
        lin=args.lin,
        distances=args.distance.split(","),
        device=args.device,
        backend=args.backend,
        seed=args.seed,
        precision=args.precision,
    )


def weights_label(args: argparse.Namespace) -> str:
    return f"random (seed {args.seed})" if args.weights == "random" else str(args.weights)
