"""LPIPS lin weights: the lpips package's files, strict keys and shapes, non-negativity."""

import pytest
import torch
from safetensors.torch import save_file

import perceptual_fast as pf
from perceptual_fast.lin import load_lin, lpips_package_lin_file
from perceptual_fast.trunks import CheckpointError

ALEX = [64, 192, 384, 256, 256]


def test_reads_the_lpips_package_file_exactly():
    pytest.importorskip("lpips", exc_type=ModuleNotFoundError)
    raw = torch.load(lpips_package_lin_file("alex"), map_location="cpu", weights_only=True)
    got = load_lin("lpips", ALEX, "alex")
    for i, w in enumerate(got):
        assert torch.equal(w, raw[f"lin{i}.model.1.weight"].flatten())
        assert w.shape == (ALEX[i],) and float(w.min()) >= 0 and float(w.max()) > 0


def test_safetensors_and_no_dropout_key_layout(tmp_path):
    weights = {f"lin{i}.model.0.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(ALEX)}
    save_file(weights, str(tmp_path / "lin.safetensors"))
    got = load_lin(tmp_path / "lin.safetensors", ALEX)
    assert all(torch.equal(g, weights[f"lin{i}.model.0.weight"].flatten()) for i, g in enumerate(got))


def test_lin_for_another_net_is_rejected():
    pytest.importorskip("lpips", exc_type=ModuleNotFoundError)
    with pytest.raises(CheckpointError, match=r"does not fit a trunk with 5 taps.*mis-shaped \['lin0: file \(1, 64, 1, 1\) vs taps \[1, 65, 1, 1\]'"):
        load_lin(lpips_package_lin_file("vgg"), [65, 128, 256, 512, 512])
    with pytest.raises(CheckpointError, match=r"unexpected \['lin5.model.1.weight', 'lin6.model.1.weight'\]"):
        load_lin(lpips_package_lin_file("squeeze"), ALEX)


def test_missing_and_negative_weights(tmp_path):
    weights = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(ALEX[:4])}
    torch.save(weights, tmp_path / "four.pth")
    with pytest.raises(CheckpointError, match=r"missing \['lin4.model.1.weight'\]"):
        load_lin(tmp_path / "four.pth", ALEX)
    weights["lin4.model.1.weight"] = -torch.rand(1, 256, 1, 1)
    torch.save(weights, tmp_path / "neg.pth")
    with pytest.raises(ValueError, match=r"negative channel weights in layer\(s\) \[4\]"):
        load_lin(tmp_path / "neg.pth", ALEX)


def test_scorer_needs_lin_for_lpips():
    with pytest.raises(ValueError, match=r"'lpips' distance needs channel weights: pass lin='lpips'"):
        pf.Scorer("alexnet", weights="random", distances=("lpips",))
