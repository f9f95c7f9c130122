"""The command line: score two images or two folders, the demo."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import perceptual_fast as pf
from perceptual_fast.cli import main


def _save(path, seed, size=(48, 40)):
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return torch.from_numpy(arr).permute(2, 0, 1)


def test_score_two_files_json_matches_the_api(tmp_path, capsys):
    a, b = _save(tmp_path / "a.png", 1), _save(tmp_path / "b.png", 2)
    assert main(["score", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--weights", "random", "--distance", "spatial,style", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = pf.Scorer("alexnet", weights="random", distances=("spatial", "style")).distance(a[None], b[None])
    assert doc["pairs"][0]["spatial"] == pytest.approx(float(want["spatial"][0]), rel=1e-6)
    assert doc["pairs"][0]["style"] == pytest.approx(float(want["style"][0]), rel=1e-6)


def test_score_folders_pairs_by_name_and_prints_a_table(tmp_path, capsys):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
    for i, name in enumerate(["c.png", "a.png", "b.png"]):
        _save(tmp_path / "x" / name, i)
        _save(tmp_path / "y" / name, 10 + i, size=(64, 64) if name == "b.png" else (48, 40))
        if name == "b.png":
            _save(tmp_path / "x" / name, i, size=(64, 64))
    assert main(["score", str(tmp_path / "x"), str(tmp_path / "y"), "--weights", "random", "--per-layer"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if ".png" in line]
    assert [row.split()[0] for row in rows] == ["a.png", "b.png", "c.png"]
    assert "spatial[4]" in out and "not calibrated" in out


def test_score_reports_unmatched_names_and_bad_files(tmp_path, capsys):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
    _save(tmp_path / "x" / "a.png", 1)
    _save(tmp_path / "y" / "b.png", 2)
    assert main(["score", str(tmp_path / "x"), str(tmp_path / "y"), "--weights", "random"]) == 2
    assert "unmatched: a.png, b.png" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    # an unreadable pair is an error row, not the end of the run: exit 3 (some pairs failed)
    assert main(["score", str(tmp_path / "bad.png"), str(tmp_path / "x" / "a.png"), "--weights", "random"]) == 3
    assert "cannot read image" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "x" / "a.png"), str(tmp_path / "x" / "a.png")]) == 2
    assert "needs weights" in capsys.readouterr().err


def test_demo_trains_sweeps_and_plots_labelled_synthetic(tmp_path, capsys):
    small = ["-o", str(tmp_path / "demo"), "--steps", "20", "--checkpoint-every", "10", "--width", "0.125", "--size", "32",
             "--triplets", "4", "--quiet"]
    assert main(["demo", *small]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "RANDOM initialisation" in out and "PS style" in out
    assert "step0000010.safetensors" in out and "step0000020.safetensors" in out
    assert (tmp_path / "demo" / "ps_vs_acc.png").stat().st_size > 1000
    assert main(["demo", *small, "--json"]) == 0  # a rerun resumes: trained and scored already
    doc = json.loads(capsys.readouterr().out)
    assert doc["data"] == "synthetic" and [r["step"] for r in doc["records"]] == [10, 20]
    assert all(r["status"] == "ok" and set(r["ps"]) == {"spatial", "meanpool", "style"} for r in doc["records"])


def test_score_takes_an_exported_archive_as_trunk(tmp_path, capsys):
    archive = tmp_path / "r6.pt"
    assert main(["export", "--trunk", "resnet6", "--weights", "random", "--seed", "2", "-o", str(archive)]) == 0
    a, b = _save(tmp_path / "a.png", 1, size=(64, 64)), _save(tmp_path / "b.png", 2, size=(64, 64))
    capsys.readouterr()
    assert main(["score", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--trunk", str(archive), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["pairs"][0]["spatial"]
    want = pf.Scorer("resnet6", weights="random", seed=2).distance(a[None], b[None])["spatial"]
    assert got == pytest.approx(float(want[0]), rel=1e-5)
    with pytest.raises(SystemExit):
        main(["score", "x.png", "y.png", "--trunk", "resnet19"])
    assert "'resnet19' is neither a trunk name" in capsys.readouterr().err
