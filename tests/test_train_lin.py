"""perceptual-fast train-lin: the LPIPS calibration protocol on SYNTHETIC 2AFC train data."""

import pytest
import torch

import perceptual_fast as pf
from perceptual_fast.bapps.pack import load_bapps, pack_folder
from perceptual_fast.bapps.synthetic import make_bapps
from perceptual_fast.cli import main
from perceptual_fast.study.train_lin import RankingNet, channel_terms, lin_distance, save_lin, train_lin


@pytest.fixture(scope="module")
def train_pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("lin")
    make_bapps(root / "bapps", triplets=4, train=24, jnd=0, progress=False)
    return pack_folder(root / "bapps", root / "bapps.safetensors", size=32, splits=("train", "val"), progress=False)


def _scorer():
    return pf.Scorer("resnet6", weights="random", trunk_config={"width": 0.125}, distances=("spatial",))


def test_training_lowers_the_loss_and_the_weights_load_through_lin(train_pack, tmp_path):
    part = load_bapps(train_pack, splits=("train",)).parts["2afc/train"]
    scorer = _scorer()
    result = train_lin(scorer, part, epochs=4, decay_epochs=2, lr=1e-2, batch_size=20, progress=False)
    assert len(result.epoch_loss) == 6 and result.epoch_loss[-1] < result.epoch_loss[0] - 0.01, result.epoch_loss
    assert [w.shape for w in result.weights] == [(8,), (16,), (32,), (64,)]
    assert all(bool((w >= 0).all()) for w in result.weights) and any(bool((w == 0).any()) for w in result.weights)
    e0, _ = channel_terms(scorer, part, progress=False)
    for name in ("lin.pth", "lin.safetensors"):
        path = save_lin(result.weights, tmp_path / name)
        state = pf.trunks.read_state_dict(path)
        assert sorted(state) == [f"lin{i}.model.1.weight" for i in range(4)] and state["lin1.model.1.weight"].shape == (1, 16, 1, 1)
        lpips = pf.Scorer("resnet6", weights="random", trunk_config={"width": 0.125}, lin=str(path), distances=("lpips",))
        batch = part.batch(0, 10)
        got = lpips.score({k: batch[k] for k in ("ref", "p0", "p1")})["d0"]["lpips"]
        torch.testing.assert_close(got, lin_distance(result.weights, [e[:10] for e in e0]), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match=".pth .* or .safetensors"):
        save_lin(result.weights, tmp_path / "lin.npz")


def test_ranking_net_and_the_command(train_pack, tmp_path, capsys):
    net = RankingNet()
    p = net(torch.tensor([0.1, 0.5]), torch.tensor([0.5, 0.1]))
    assert p.shape == (2,) and bool(((p > 0) & (p < 1)).all())
    out = tmp_path / "lin.pth"
    assert main(["train-lin", str(train_pack), "--trunk", "resnet6", "--weights", "random", "--epochs", "1",
                 "--decay-epochs", "1", "--lr", "1e-3", "-o", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "SYNTHETIC" in text and "BCE loss" in text and out.is_file()
    assert main(["train-lin", str(train_pack), "--trunk", "resnet6", "--weights", "random", "-o", str(out), "--quiet"]) == 0
    val_only = tmp_path / "val_only"
    make_bapps(val_only, triplets=2, jnd=0, progress=False)
    pack = pack_folder(val_only, tmp_path / "val_only.safetensors", size=32, progress=False)
    assert main(["train-lin", str(pack), "--trunk", "resnet6", "--weights", "random", "-o", str(out)]) == 2
    assert "holds no train split" in capsys.readouterr().err
