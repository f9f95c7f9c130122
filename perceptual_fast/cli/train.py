"""``perceptual-fast train``: train a trunk's classifier at 64x64 with checkpoints; reruns resume."""

from __future__ import annotations

import argparse

from ..study.train import CROPS, SCHEDULES, TrainConfig, train
from ..trunks import list_trunks
from ..util.tables import format_table

_DEFAULTS = TrainConfig()


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a classifier (ResNet/ViT/LPIPS nets) with checkpoints the sweep scores; "
                                     "rerun to resume")
    p.add_argument("-o", "--output", required=True, help="run folder: stepNNNNNNN.safetensors, train_state.pt, train_log.jsonl")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (SYNTHETIC orientation classes, made on the fly), a folder of downsampled-ImageNet "
                        "npz batches (train_data_batch_*, val_data), or ROOT/{train,val}/<class>/<image>")
    p.add_argument("--trunk", default=_DEFAULTS.trunk, choices=list_trunks(), help="architecture preset (default: resnet6)")
    p.add_argument("--depth", type=int, default=None, help="ResNet depth (6, 18, 34, 50, ...) or ViT blocks")
    p.add_argument("--width", type=float, default=None, help="width multiplier (ResNet channels, ViT embed_dim)")
    p.add_argument("--steps", type=int, default=None, help="training steps (or give --epochs)")
    p.add_argument("--epochs", type=float, default=None, help="training epochs (used when --steps is not given)")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    p.add_argument("--lr", type=float, default=_DEFAULTS.lr, help="peak learning rate (SGD, Nesterov momentum)")
    p.add_argument("--momentum", type=float, default=_DEFAULTS.momentum)
    p.add_argument("--weight-decay", type=float, default=_DEFAULTS.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=_DEFAULTS.label_smoothing)
    p.add_argument("--dropout", type=float, default=_DEFAULTS.dropout, help="dropout before the classifier")
    p.add_argument("--crop", choices=CROPS, default=_DEFAULTS.crop, help="random (with flips) or central crops")
    p.add_argument("--crop-fraction", type=float, default=_DEFAULTS.crop_fraction, help="crop side / image side")
    p.add_argument("--warmup-steps", type=int, default=_DEFAULTS.warmup_steps)
    p.add_argument("--schedule", choices=SCHEDULES, default=_DEFAULTS.schedule, help="LR decay after warmup")
    p.add_argument("--step-milestones", default="0.5,0.75", help="step schedule: fractions of the run where LR drops")
    p.add_argument("--step-gamma", type=float, default=_DEFAULTS.step_gamma, help="step schedule: LR factor per drop")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    p.add_argument("--checkpoint-every", type=int, default=_DEFAULTS.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--size", type=int, default=_DEFAULTS.size, help="image side (default 64)")
    p.add_argument("--num-classes", type=int, default=_DEFAULTS.num_classes, help="synthetic data: number of classes")
    p.add_argument("--synthetic-n", type=int, default=_DEFAULTS.synthetic_n, help="synthetic data: training images")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    milestones = tuple(float(v) for v in args.step_milestones.split(",") if v)
    return TrainConfig(
        trunk=args.trunk, depth=args.depth, width=args.width, data=args.data, size=args.size, num_classes=args.num_classes,
        synthetic_n=args.synthetic_n, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, dropout=args.dropout,
        crop=args.crop, crop_fraction=args.crop_fraction, warmup_steps=args.warmup_steps, schedule=args.schedule,
        step_milestones=milestones, step_gamma=args.step_gamma, bf16=args.bf16, checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    history = train(cfg, args.output, progress=not args.quiet)
    synthetic = cfg.data == "synthetic"
    print(f"{'SYNTHETIC classes, ' if synthetic else ''}{cfg.trunk} trained from a random initialisation "
          f"(seed {cfg.seed}); checkpoints in {args.output}")
    rows = [[h["checkpoint"], h["step"], h["epoch"], h["train_loss"], 100 * h["val_top1"]] for h in history]
    print(format_table(["checkpoint", "step", "epoch", "train loss", "val top-1 %"], rows, floatfmt=".3g"))
    return 0
