"""Finding and reading the checkpoints a sweep scores: files, folders and globs expanded to sorted paths,
what a checkpoint says of itself (trunk config, training record) and its trunk built for scoring."""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from torch import nn

from ...trunks import load_trunk
from ...trunks.checkpoint import CONFIG_KEY
from ..train import STATE_FILE, TRAIN_KEY

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ts", ".jit", ".pt2")


def expand_checkpoints(specs: Sequence[str]) -> List[Path]:
    """Files, folders (their checkpoint files, recursively, less training states) and glob patterns -> sorted
    unique paths.

    A spec that matches nothing is an error naming it.
    """
    found: List[Path] = []
    for spec in specs:
        if any(c in spec for c in "*?["):
            matches = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
        elif Path(spec).is_dir():
            matches = [p for p in Path(spec).rglob("*")
                       if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES and p.name != STATE_FILE]
        else:
            matches = [Path(spec)] if Path(spec).is_file() else []
        if not matches:
            raise ValueError(f"no checkpoint matches {spec!r} (give files, folders or glob patterns of "
                             f"{', '.join(CHECKPOINT_SUFFIXES)} files)")
        found += matches
    return sorted({p.resolve() for p in found})


def checkpoint_info(path: Path) -> Dict[str, Any]:
    """What a checkpoint file says of itself without loading its tensors: trunk config and training
    record (step, epoch, val_top1, hyperparameters) from safetensors metadata; {} when it says nothing."""
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
    info = json.loads(meta[TRAIN_KEY]) if TRAIN_KEY in meta else {}
    if CONFIG_KEY in meta:
        info["config"] = json.loads(meta[CONFIG_KEY])
    return info


def load_checkpoint(path: Path) -> Tuple[nn.Module, Dict[str, Any]]:
    """Reads and builds one checkpoint's trunk (taps only) and its self-description."""
    module = load_trunk(path, head=False)  # first: its errors name the file and what is wrong with it
    info = checkpoint_info(path)
    if "config" not in info and getattr(module, "trunk_config", ""):
        info["config"] = json.loads(module.trunk_config)
    return module, info
