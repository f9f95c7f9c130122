"""perceptual-fast train: learning on synthetic classes, checkpoints the scorer loads, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open

import perceptual_fast as pf
from perceptual_fast.cli import main
from perceptual_fast.study.classes import load_class_data, synthetic_classes
from perceptual_fast.study.train import (
    LOG_FILE,
    TRAIN_KEY,
    TrainConfig,
    _add_dropout,
    batch_indices,
    crop_images,
    lr_factor,
    model_config,
    train,
)
from perceptual_fast.trunks import read_checkpoint

TINY = dict(width=0.125, size=32, batch_size=32, synthetic_n=512, num_classes=4, lr=0.1, warmup_steps=5)


def _meta(path):
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_tiny_run_beats_chance_and_its_checkpoints_load_into_the_scorer(tmp_path):
    cfg = TrainConfig(steps=60, checkpoint_every=30, **TINY)
    history = train(cfg, tmp_path, progress=False)
    assert [h["step"] for h in history] == [30, 60]
    assert history[-1]["val_top1"] > 0.25 + 0.15, history  # 4 classes: chance is 0.25
    ckpt = tmp_path / "step0000060.safetensors"
    info = json.loads(_meta(ckpt)[TRAIN_KEY])
    assert info["step"] == 60 and info["val_top1"] == history[-1]["val_top1"] and info["hyperparameters"]["width"] == 0.125
    assert info["synthetic"] is True
    state, config = read_checkpoint(ckpt)
    assert config == model_config(cfg, 4) and config["name"] == "resnet6" and config["num_classes"] == 4
    scorer = pf.Scorer(trunk=str(ckpt), distances=("spatial",))
    assert scorer.trunk_name == "resnet6" and list(scorer.trunk.tap_channels) == [8, 16, 32, 64]
    assert torch.equal(scorer.trunk.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    # the file's classifier is the trained one: its accuracy is reproduced from the file alone
    model = pf.load_trunk(ckpt)
    val = synthetic_classes(128, 32, 4, seed=cfg.seed + 7919)
    x = crop_images(val.images, "central", cfg.crop_fraction, None)
    with torch.no_grad():
        acc = float((model(pf.preprocess.lpips_scaling(x)).argmax(1) == val.labels).float().mean())
    assert acc > 0.4


def test_batches_schedules_and_crops():
    cfg = TrainConfig(steps=100, batch_size=8, warmup_steps=10, schedule="step", step_milestones=(0.5,), step_gamma=0.1)
    epoch = torch.cat([batch_indices(cfg, s, 40) for s in range(5)])
    assert sorted(epoch.tolist()) == list(range(40))  # one epoch reads every image once
    assert not torch.equal(batch_indices(cfg, 0, 40), batch_indices(cfg, 5, 40))  # the next epoch reshuffles
    assert lr_factor(cfg, 0, 100) == pytest.approx(0.1) and lr_factor(cfg, 9, 100) == 1.0
    assert lr_factor(cfg, 40, 100) == 1.0 and lr_factor(cfg, 60, 100) == pytest.approx(0.1)
    cos = TrainConfig(steps=100, schedule="cosine")
    assert lr_factor(cos, 0, 100) == 1.0 and lr_factor(cos, 50, 100) == pytest.approx(0.5) and lr_factor(cos, 100, 100) < 1e-9
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    central = crop_images(images, "central", 0.5, None)
    assert central.shape == (4, 3, 16, 16) and central.dtype == torch.float32 and -1 <= central.min() <= central.max() <= 1
    full = crop_images(images, "central", 1.0, None)
    assert torch.equal(full, images.float() / 127.5 - 1)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(crop_images(images, "random", 0.5, g()), crop_images(images, "random", 0.5, g()))
    assert not torch.equal(crop_images(images, "random", 0.5, g()), central)


def test_dropout_acts_on_the_classifier_input_in_training_only():
    model = pf.trunks.build_trunk(model_config(TrainConfig(width=0.125), 5))
    x = torch.randn(4, 3, 32, 32)
    clean = model.eval()(x)
    _add_dropout(model, 0.5)
    torch.testing.assert_close(model(x), clean)
    model.train()
    a, b = model(x), model(x)
    assert not torch.allclose(a, b) and set(model.state_dict()) == set(pf.trunks.build_trunk(model_config(TrainConfig(width=0.125), 5)).state_dict())


def test_hyperparameters_reach_the_model(tmp_path):
    cfg = TrainConfig(trunk="resnet18", width=0.0625, steps=2, checkpoint_every=2, dropout=0.3, label_smoothing=0.1,
                      crop="central", bf16=True, **{k: v for k, v in TINY.items() if k != "width"})
    train(cfg, tmp_path, progress=False)
    _, config = read_checkpoint(tmp_path / "step0000002.safetensors")
    assert config["depth"] == 18 and config["width"] == 0.0625
    assert model_config(TrainConfig(trunk="resnet6", depth=50, width=0.5), 10)["name"] == "resnet50"
    vit_run = TrainConfig(trunk="vit_t_8", depth=2, width=0.25, size=16, steps=2, checkpoint_every=1, dropout=0.2,
                          batch_size=8, synthetic_n=32, num_classes=2)
    assert [h["step"] for h in train(vit_run, tmp_path / "vit", progress=False)] == [1, 2]
    scorer = pf.Scorer(str(tmp_path / "vit" / "step0000002.safetensors"), distances=("meanpool",))
    assert scorer.trunk_name == "vit_t_8" and list(scorer.trunk.tap_channels) == [48, 48]
    vit = model_config(TrainConfig(trunk="vit_t_8", depth=3, width=0.5, size=32), 10)
    assert vit["depth"] == 3 and vit["embed_dim"] == 96 and vit["img_size"] == 32
    with pytest.raises(ValueError, match="fixed depth and width"):
        model_config(TrainConfig(trunk="alexnet", width=0.5), 10)
    with pytest.raises(ValueError, match="other hyperparameters"):
        train(TrainConfig(**{**cfg.__dict__, "lr": 0.5}), tmp_path, progress=False)
    with pytest.raises(ValueError, match="steps= .* or epochs="):
        train(TrainConfig(), tmp_path / "x", progress=False)


_TRAIN_SCRIPT = """
import sys
from perceptual_fast.study.train import TrainConfig, train
train(TrainConfig(**{cfg}), sys.argv[1], progress=False)
"""


def test_sigkill_mid_run_then_resume_loses_and_repeats_nothing(tmp_path):
    cfg = dict(steps=45, checkpoint_every=15, **TINY)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([sys.executable, "-c", _TRAIN_SCRIPT.format(cfg=repr(cfg)), str(killed)])
    deadline = time.time() + 120
    while not (killed / "train_state.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in killed.glob("step*.safetensors"))
    assert done_before and "step0000045.safetensors" not in done_before
    stamps = {n: (killed / n).stat().st_mtime_ns for n in done_before}
    history = train(TrainConfig(**cfg), killed, progress=False)
    assert [h["step"] for h in history] == [15, 30, 45]
    assert sorted(p.name for p in killed.glob("step*.safetensors")) == [f"step{s:07d}.safetensors" for s in (15, 30, 45)]
    assert all((killed / n).stat().st_mtime_ns == t for n, t in stamps.items())  # nothing done is redone
    log = [json.loads(line)["step"] for line in (killed / LOG_FILE).read_text().splitlines()]
    assert log == [15, 30, 45]
    assert not list(killed.glob(".*.tmp"))
    # the resumed run continues the same trajectory as an uninterrupted one
    reference = train(TrainConfig(**cfg), clean, progress=False)
    a, _ = read_checkpoint(killed / "step0000045.safetensors")
    b, _ = read_checkpoint(clean / "step0000045.safetensors")
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert history[-1]["val_top1"] == pytest.approx(reference[-1]["val_top1"], abs=0.02)


def test_imagenet64_batches_and_image_folders(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "imagenet64"
    npz.mkdir()
    data = rng.integers(0, 256, (6, 12288), dtype=np.uint8)
    np.savez(npz / "train_data_batch_1.npz", data=data[:4], labels=np.array([1, 2, 3, 1]))
    np.savez(npz / "val_data.npz", data=data[4:], labels=np.array([2, 3]))
    train_split = load_class_data(str(npz), "train", progress=False)
    assert train_split.images.shape == (4, 3, 64, 64) and train_split.labels.tolist() == [0, 1, 2, 0]
    # channel planes: the first 4096 values are red, row-major
    assert train_split.images[1, 0, 0, 5] == data[1, 5] and train_split.images[1, 2, 1, 0] == data[1, 2 * 4096 + 64]
    assert load_class_data(str(npz), "val", progress=False).labels.tolist() == [1, 2]
    with pytest.raises(ValueError, match="use --size 64"):
        load_class_data(str(npz), "train", size=32, progress=False)
    np.savez(npz / "train_data_batch_2.npz", data=data[:2], labels=np.array([0, 1]))
    with pytest.raises(ValueError, match="1-based"):
        load_class_data(str(npz), "train", progress=False)

    from PIL import Image

    tree = tmp_path / "tree"
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tree / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tree / split / c / f"{i}.png")
    folder = load_class_data(str(tree), "train", size=16, progress=False)
    assert folder.images.shape == (4, 3, 16, 16) and folder.classes == ("cat", "dog") and folder.labels.tolist() == [0, 0, 1, 1]
    assert main(["train", "--data", str(tree), "--size", "16", "--width", "0.125", "--steps", "2", "--batch-size", "2",
                 "--checkpoint-every", "1", "-o", str(tmp_path / "run"), "--quiet"]) == 0
    _, config = read_checkpoint(tmp_path / "run" / "step0000002.safetensors")
    assert config["num_classes"] == 2
    with pytest.raises(ValueError, match="no val/ folder"):
        load_class_data(str(tree / "train"), "val", progress=False)
