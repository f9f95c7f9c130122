"""perceptual-fast plot: PS vs accuracy per sweep axis and PS vs step, from sweep records."""

import json
import sys

import pytest
from PIL import Image

from perceptual_fast.cli import main
from perceptual_fast.study.plot import plot_results, sweep_axes
from perceptual_fast.study.sweep import write_results


def _records(tmp_path):
    records = []
    for width in (0.25, 0.5):
        for step in (100, 200, 300):
            hp = {"trunk": "resnet6", "width": width, "steps": 300, "seed": 0, "data": "synthetic", "checkpoint_every": 100}
            records.append({"checkpoint": str(tmp_path / f"w{width}" / f"step{step:07d}.safetensors"), "status": "ok",
                            "trunk": "resnet6", "step": step, "val_top1": step / 400 + width / 10, "hyperparameters": hp,
                            "ps": {"spatial": 70 + step / 100 - width, "style": 71.0}, "two_afc": {}, "config": {},
                            "ps_per_layer": {"spatial": [60 + i + step / 100 for i in range(5)], "style": [71.0] * 5},
                            "jnd_map": None})
    records.append({"checkpoint": str(tmp_path / "bad.safetensors"), "status": "error", "error": "CheckpointError: x"})
    return records


def test_plot_writes_a_figure_with_a_panel_per_sweep_axis(tmp_path):
    records = _records(tmp_path)
    assert sweep_axes([r for r in records if r["status"] == "ok"]) == ["width"]
    out = plot_results(records, tmp_path / "fig" / "ps_vs_acc.png", distance="style")
    with Image.open(out) as img:
        assert img.size[0] > 2 * img.size[1] * 0.9  # two panels side by side: PS vs accuracy by width, PS vs step
    with pytest.raises(ValueError, match="distance 'lpips' is not in every result"):
        plot_results(records, tmp_path / "x.png", distance="lpips")
    with pytest.raises(ValueError, match="no successfully scored checkpoint"):
        plot_results(records[-1:], tmp_path / "x.png")


def test_plot_command_and_missing_matplotlib(tmp_path, capsys, monkeypatch):
    write_results(_records(tmp_path), tmp_path / "sweep")
    assert main(["plot", str(tmp_path / "sweep"), "-o", str(tmp_path / "p.png")]) == 0
    assert "by width" in capsys.readouterr().out and (tmp_path / "p.png").stat().st_size > 1000
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", str(tmp_path / "sweep" / "results.jsonl"), "-o", str(tmp_path / "q.png")]) == 2
    assert "pip install 'perceptual_fast[plot]'" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert json.loads((tmp_path / "sweep" / "results.jsonl").read_text().splitlines()[0])["status"] == "ok"


def test_per_layer_panel(tmp_path, capsys):
    records = _records(tmp_path)
    plain = plot_results(records, tmp_path / "plain.png", distance="spatial")
    layered = plot_results(records, tmp_path / "layers.png", distance="spatial", per_layer=True)
    with Image.open(plain) as a, Image.open(layered) as b:
        assert b.size[1] == a.size[1] and b.size[0] > a.size[0] * 1.3  # a third panel: per-layer PS vs accuracy
    older = [{k: v for k, v in r.items() if k != "ps_per_layer"} for r in records]  # an older sweep's records
    assert plot_results(older, tmp_path / "older.png").is_file()
    with pytest.raises(ValueError, match="per-layer PS"):
        plot_results(older, tmp_path / "x.png", per_layer=True)
    write_results(records, tmp_path / "sweep")
    assert main(["plot", str(tmp_path / "sweep"), "--per-layer", "--distance", "spatial", "-o", str(tmp_path / "c.png")]) == 0
    assert "per-layer PS vs accuracy" in capsys.readouterr().out
