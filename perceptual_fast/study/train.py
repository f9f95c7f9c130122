"""Training the trunks' classifiers at 64x64 with the hyperparameters Kumar et al. sweep.

    cfg = TrainConfig(trunk="resnet6", width=0.5, steps=2000, weight_decay=1e-4, label_smoothing=0.1)
    records = train(cfg, "runs/r6_w05")      # runs/r6_w05/step0000100.safetensors, ...

A standard loop: SGD with Nesterov momentum, linear warmup then cosine or step decay, cross
entropy with label smoothing, optional dropout before the classifier, random or central crops
(plus random flips with random crops), optional bfloat16 autocast. Images go through the same
LPIPS scaling layer the Scorer applies, so a checkpoint's taps are what it was trained on.

Every ``checkpoint_every`` steps (and at the end) it writes ``stepNNNNNNN.safetensors``: the trunk's
weights with its config (metadata ``perceptual_fast.trunk``, so the Scorer and the sweep load it
from the file alone) and ``perceptual_fast.train`` (JSON: step, epoch, val_top1, train_loss, data,
hyperparameters). Then ``train_state.pt`` (model, optimizer, LR schedule, RNG, step) and
``train_log.jsonl``, each written atomically. A rerun with the same options resumes from the state:
the batch of step s and its augmentation are functions of (seed, s), so a resumed run continues
the same trajectory; no step is lost or repeated and no checkpoint is written twice.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..preprocess import lpips_scaling
from ..trunks import build_trunk, trunk_config, trunk_spec
from ..trunks.checkpoint import CONFIG_KEY
from ..util.atomic import write_atomically, write_text_atomically
from ..util.progress import Progress
from .class_data import ClassData
from .classes import load_class_data

TRAIN_KEY = "perceptual_fast.train"
STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"
SCHEDULES = ("cosine", "step")
CROPS = ("random", "central")


@dataclass
class TrainConfig:
    """Every hyperparameter of a run (all JSON-able; recorded in each checkpoint).

    trunk: registry name (``resnet6``, ``resnet50``, ``vit_t_8``, ...); depth/width override it
    (ResNet: depth picks ``resnet{depth}``, width is the channel multiplier; ViT: depth = blocks,
    width multiplies embed_dim, rounded to a multiple of the head count).
    steps or epochs: the run's length (steps wins when both are given).
    lr: peak learning rate after ``warmup_steps`` of linear warmup; ``schedule`` ``cosine`` (to 0)
    or ``step`` (x ``step_gamma`` at each fraction of the run in ``step_milestones``).
    crop: ``random`` (a random ``crop_fraction`` square + random flip) or ``central``, resized back to
    ``size``; validation always uses the central crop.
    data: ``synthetic`` or a folder (npz batches, or ROOT/{train,val}/<class>/); ``num_classes`` and
    ``synthetic_n`` apply to synthetic data only.
    """

    trunk: str = "resnet6"
    depth: Optional[int] = None
    width: Optional[float] = None
    data: str = "synthetic"
    size: int = 64
    num_classes: int = 6
    synthetic_n: int = 2048
    steps: Optional[int] = None
    epochs: Optional[float] = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    dropout: float = 0.0
    crop: str = "random"
    crop_fraction: float = 0.875
    warmup_steps: int = 0
    schedule: str = "cosine"
    step_milestones: Tuple[float, ...] = (0.5, 0.75)
    step_gamma: float = 0.1
    bf16: bool = False
    checkpoint_every: int = 100
    seed: int = 0

    def check(self) -> None:
        if self.steps is None and self.epochs is None:
            raise ValueError("give the run's length: steps= (--steps) or epochs= (--epochs)")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.crop not in CROPS:
            raise ValueError(f"crop {self.crop!r} is not one of {CROPS}")
        if not 0 < self.crop_fraction <= 1 or not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("crop_fraction must be in (0, 1], dropout and label_smoothing in [0, 1)")
        if self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("batch_size and checkpoint_every must be positive")

    def hyperparameters(self) -> Dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def model_config(cfg: TrainConfig, num_classes: int) -> Dict[str, Any]:
    """The trunk config the run builds: the preset ``cfg.trunk`` with depth, width, classes (and dropout
    for the LPIPS nets, whose classifier has its own) applied."""
    spec = trunk_spec(cfg.trunk)
    name, over = spec.name, {"num_classes": num_classes}
    base = trunk_config(name)
    if spec.family == "resnet":
        name = f"resnet{cfg.depth}" if cfg.depth is not None else name
        if cfg.width is not None:
            over["width"] = cfg.width
    elif spec.family == "vit":
        if cfg.depth is not None:
            over["depth"] = cfg.depth
        if cfg.width is not None:
            heads = base["num_heads"]
            over["embed_dim"] = heads * max(1, round(base["embed_dim"] * cfg.width / heads))
        over["img_size"] = cfg.size
    else:
        if cfg.depth is not None or cfg.width is not None:
            raise ValueError(f"trunk {name!r} has a fixed depth and width; --depth/--width apply to resnet and vit trunks")
        over["dropout"] = cfg.dropout
    return trunk_config(name, **over)


def total_steps(cfg: TrainConfig, n_train: int) -> int:
    return int(cfg.steps) if cfg.steps is not None else max(1, math.ceil(cfg.epochs * n_train / cfg.batch_size))


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """Multiplier of ``cfg.lr`` at ``step`` (0-based): linear warmup, then cosine or step decay."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.step_gamma ** sum(progress >= m for m in cfg.step_milestones)


def batch_indices(cfg: TrainConfig, step: int, n: int) -> Tensor:
    """Indices of step ``step``'s batch: epoch e = step // (n // B) reads a permutation seeded by (seed, e)."""
    per_epoch = max(1, n // cfg.batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    return perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]


def crop_images(images: Tensor, crop: str, fraction: float, generator: Optional[torch.Generator]) -> Tensor:
    """uint8 ``[B, 3, S, S]`` -> float32 ``[B, 3, S, S]`` in [-1, 1]: a square of side ``fraction * S``,
    central or (``random``) at a random place and flipped with probability 1/2, resized back to S."""
    b, _, s, _ = images.shape
    side = max(1, round(fraction * s))
    x = images.float() / 127.5 - 1
    if crop == "central":
        top = left = torch.full((b,), (s - side) // 2)
        flip = torch.zeros(b, dtype=torch.bool)
    else:
        top, left = (torch.randint(0, s - side + 1, (b,), generator=generator) for _ in range(2))
        flip = torch.rand(b, generator=generator) < 0.5
    out = torch.stack([x[i, :, int(top[i]) : int(top[i]) + side, int(left[i]) : int(left[i]) + side] for i in range(b)])
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    if side != s:
        out = F.interpolate(out, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp(-1, 1)


def _add_dropout(model: nn.Module, p: float) -> None:
    """Dropout on the classifier's input (the pooled features) while training; nothing saved with it."""
    head = getattr(model, model.HEAD)
    head.register_forward_pre_hook(lambda m, args: (F.dropout(args[0], p, m.training),))


@torch.no_grad()
def top1(model: nn.Module, data: ClassData, cfg: TrainConfig, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] on ``data`` (central crops, eval mode; leaves the model in eval mode)."""
    model.eval()
    correct = 0
    for i in range(0, len(data), batch_size):
        x = crop_images(data.images[i : i + batch_size], "central", cfg.crop_fraction, None)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(lpips_scaling(x))
        correct += int((logits.argmax(1) == data.labels[i : i + batch_size]).sum())
    return correct / len(data)


def checkpoint_name(step: int) -> str:
    return f"step{step:07d}.safetensors"


def save_checkpoint(model: nn.Module, path: Path, info: Dict[str, Any]) -> None:
    """The trunk's weights with its config and ``info`` (step, accuracy, hyperparameters) in the metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {CONFIG_KEY: model.trunk_config, TRAIN_KEY: json.dumps(info, sort_keys=True)}
    write_atomically(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def _write_log(out: Path, history: List[Dict[str, Any]]) -> None:
    write_text_atomically(out / LOG_FILE, "".join(json.dumps(h) + "\n" for h in history))


def train(cfg: TrainConfig, out_dir: os.PathLike, progress: bool = True) -> List[Dict[str, Any]]:
    """Trains (or resumes) the run ``cfg`` in ``out_dir``; returns one record per checkpoint (step, epoch,
    val_top1, train_loss, lr, data). A folder holding a run with other hyperparameters is an error."""
    cfg.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    state = torch.load(state_path, map_location="cpu", weights_only=True) if state_path.is_file() else None
    if state is not None and state["hyperparameters"] != cfg.hyperparameters():
        theirs = state["hyperparameters"]
        diff = {k: (theirs.get(k), v) for k, v in cfg.hyperparameters().items() if theirs.get(k) != v}
        raise ValueError(f"{str(out)!r} holds a run with other hyperparameters (stored, given): {diff}; "
                         "resume with the same options or write to another folder")
    train_data = load_class_data(cfg.data, "train", cfg.size, cfg.num_classes, cfg.synthetic_n, cfg.seed, progress)
    val_data = load_class_data(cfg.data, "val", cfg.size, cfg.num_classes, cfg.synthetic_n, cfg.seed, progress)
    torch.manual_seed(cfg.seed)
    model = build_trunk(model_config(cfg, len(train_data.classes)), head=True)
    if cfg.dropout > 0 and "dropout" not in json.loads(model.trunk_config):
        _add_dropout(model, cfg.dropout)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                                weight_decay=cfg.weight_decay)
    total = total_steps(cfg, len(train_data))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, total))
    step, history, losses = 0, [], []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        step, history, losses = int(state["step"]), json.loads(state["history"]), list(state["losses"])
        _write_log(out, history)  # a kill between the state and the log left the log one checkpoint behind
    bar = Progress(total - step, f"training {trunk_spec(cfg.trunk).name} -> {out}", "steps", enabled=progress)
    while step < total:
        model.train()
        idx = batch_indices(cfg, step, len(train_data))
        g = torch.Generator().manual_seed(cfg.seed * 7_919 + step)
        x = crop_images(train_data.images[idx], cfg.crop, cfg.crop_fraction, g)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(lpips_scaling(x))
        loss = F.cross_entropy(logits.float(), train_data.labels[idx], label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == total:
            info = {"step": step, "epoch": step * cfg.batch_size / len(train_data), "val_top1": top1(model, val_data, cfg),
                    "train_loss": sum(losses) / len(losses), "lr": optimizer.param_groups[0]["lr"],
                    "data": train_data.source, "synthetic": train_data.synthetic, "hyperparameters": cfg.hyperparameters()}
            save_checkpoint(model, out / checkpoint_name(step), info)
            history.append({"checkpoint": checkpoint_name(step), **{k: v for k, v in info.items() if k != "hyperparameters"}})
            losses = []
            snapshot = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                        "rng": torch.get_rng_state(), "step": step, "losses": losses, "history": json.dumps(history),
                        "hyperparameters": cfg.hyperparameters()}
            write_atomically(state_path, lambda tmp: torch.save(snapshot, tmp))
            _write_log(out, history)
    return history
