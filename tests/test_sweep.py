"""perceptual-fast sweep: the table (PS, per-layer PS, JND mAP), bad checkpoints, reruns (also of an older sweep's
records), a SIGKILL mid-sweep, and torchrun."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import perceptual_fast as pf
from perceptual_fast.bapps.evaluate import evaluate_bapps
from perceptual_fast.bapps.pack import load_bapps, pack_folder
from perceptual_fast.bapps.synthetic import make_bapps
from perceptual_fast.cli import main
from perceptual_fast.metrics import category_means, jnd_map, perceptual_score, two_afc
from perceptual_fast.study.sweep import (
    DONE_DIR,
    RESULTS_CSV,
    csv_text,
    expand_checkpoints,
    format_results,
    read_results,
    run_sweep,
)
from perceptual_fast.study.train import TrainConfig, train

DISTANCES = ("spatial", "meanpool", "style")


@pytest.fixture(scope="module")
def sweep_inputs(tmp_path_factory):
    """Three checkpoints of a tiny ResNet-6 run, an exported TorchScript trunk, and a SYNTHETIC 32 px pack."""
    root = tmp_path_factory.mktemp("sweep")
    train(TrainConfig(width=0.125, size=32, batch_size=16, synthetic_n=128, num_classes=3, steps=6, checkpoint_every=2),
          root / "run", progress=False)
    (root / "exported").mkdir()
    assert main(["export", "--trunk", "resnet6", "--weights", "random", "--config", "width=0.125",
                 "-o", str(root / "exported" / "random_r6.pt")]) == 0
    make_bapps(root / "bapps", triplets=8, jnd=4, progress=False)
    pack = pack_folder(root / "bapps", root / "bapps.safetensors", size=32, progress=False)
    return root, pack


def _strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _csv_rows(out):
    with open(out / RESULTS_CSV, newline="") as f:
        return list(csv.DictReader(f))


def _independent_scores(checkpoint, data):
    """Per-layer PS (2afc/val) and JND mAP x100 (jnd/val) of every distance, straight from the Scorer's terms."""
    scorer = pf.Scorer(checkpoint, distances=DISTANCES)
    part = data.parts["2afc/val"]
    b = part.batch(0, len(part))
    with torch.no_grad():
        r = scorer.score({k: b[k] for k in ("ref", "p0", "p1")}, per_layer=True)
    k = len(part.categories)
    per_layer = {d: [perceptual_score(category_means(two_afc(r["d0"][d][:, i], r["d1"][d][:, i], part.target),
                                                     part.category, k).tolist())
                     for i in range(r["d0"][d].shape[1])] for d in DISTANCES}
    jnd = data.parts["jnd/val"]
    b = jnd.batch(0, len(jnd))
    with torch.no_grad():
        dist = scorer.distance(b["p0"], b["p1"])
    maps = {d: [jnd_map(dist[d][jnd.category == c], jnd.target[jnd.category == c]) for c in range(len(jnd.categories))]
            for d in DISTANCES}
    return per_layer, {d: 100 * sum(v) / len(v) for d, v in maps.items()}


def test_sweep_table_matches_scoring_each_checkpoint_alone(sweep_inputs, tmp_path):
    root, pack = sweep_inputs
    records = run_sweep([str(root / "run"), str(root / "exported" / "*.pt")], pack, DISTANCES, tmp_path, progress=False)
    assert [os.path.basename(r["checkpoint"]) for r in records] == \
        ["random_r6.pt", "step0000002.safetensors", "step0000004.safetensors", "step0000006.safetensors"]
    assert all(r["status"] == "ok" for r in records)
    data = load_bapps(pack)
    for r in records:
        alone = evaluate_bapps(data, pf.Scorer(r["checkpoint"], distances=DISTANCES), progress=False).parts["2afc/val"]
        assert r["ps"] == pytest.approx(alone.summary, rel=1e-9)
        assert r["two_afc"]["style"] == pytest.approx(dict(zip(alone.categories, alone.scores["style"])), rel=1e-9)
        assert r["config"]["name"] == "resnet6" and r["config"]["width"] == 0.125
    trained = records[1:]
    assert [r["step"] for r in trained] == [2, 4, 6] and all(0 <= r["val_top1"] <= 1 for r in trained)
    assert records[0]["step"] is None and records[0]["hyperparameters"] is None
    assert _strip(read_results(tmp_path)) == _strip(records)
    csv_lines = (tmp_path / RESULTS_CSV).read_text().splitlines()
    header = csv_lines[0].split(",")
    assert len(csv_lines) == 5 and header[:6] == ["checkpoint", "status", "trunk", "step", "epoch", "val_top1"]
    assert {"ps_spatial", "ps_meanpool", "ps_style", "2afc_style_blur"} <= set(header)
    # per-layer PS and JND mAP, from the same sweep (the pack has jnd/val)
    assert "jnd/val" in data.parts
    rows = _csv_rows(tmp_path)
    for r, row in zip(records[:2], rows):
        per_layer, jnd = _independent_scores(r["checkpoint"], data)
        for d in DISTANCES:
            assert len(r["ps_per_layer"][d]) == len(per_layer[d]) > 1
            assert r["ps_per_layer"][d] == pytest.approx(per_layer[d], abs=1e-9)
            assert [float(row[f"ps_{d}_l{i}"]) for i in range(len(per_layer[d]))] == pytest.approx(per_layer[d], abs=1e-9)
            assert r["jnd_map"][d] == pytest.approx(jnd[d], abs=1e-9)
            assert float(row[f"jnd_map_{d}"]) == pytest.approx(jnd[d], abs=1e-9)
            assert float(row[f"ps_{d}"]) == pytest.approx(r["ps"][d], abs=1e-9)
    with pytest.raises(ValueError, match="no checkpoint matches"):
        expand_checkpoints([str(root / "nothing*.safetensors")])


def test_sweep_scores_dists_checkpoints_with_their_weights(sweep_inputs, tmp_path):
    """A dists_vgg16 checkpoint with lin='dists': the same PS as scoring it alone; the weights are a setting
    (a rerun without them does not reuse the record: it fails on the missing weights instead)."""
    _, pack = sweep_inputs
    checkpoint = tmp_path / "dists_vgg16.safetensors"
    pf.save_trunk(pf.load_trunk("dists_vgg16", weights="random", seed=2, head=False), checkpoint)
    distances = ("dists", "spatial")
    (record,) = run_sweep([str(checkpoint)], pack, distances, tmp_path / "out", lin="dists", progress=False)
    assert record["status"] == "ok" and record["trunk"] == "dists_vgg16" and record["settings"]["lin"] == "dists"
    alone = evaluate_bapps(load_bapps(pack), pf.Scorer(str(checkpoint), lin="dists", distances=distances),
                           progress=False).parts["2afc/val"]
    assert record["ps"] == pytest.approx(alone.summary, rel=1e-9) and set(record["ps"]) == set(distances)
    assert len(record["ps_per_layer"]["dists"]) == 6  # the image and five VGG stages
    (again,) = run_sweep([str(checkpoint)], pack, distances, tmp_path / "out", progress=False)
    assert again["status"] == "error" and "alpha/beta weights" in again["error"]


def test_corrupt_checkpoint_is_reported_and_the_sweep_goes_on(sweep_inputs, tmp_path, capsys):
    root, pack = sweep_inputs
    ckpts = tmp_path / "ckpts"
    shutil.copytree(root / "run", ckpts)
    bad = ckpts / "step0000004.safetensors"
    bad.write_bytes(bad.read_bytes()[:300])
    assert main(["sweep", str(ckpts), "--data", str(pack), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "CheckpointError" in out and "step0000004" in out
    records = read_results(tmp_path / "out")
    assert [r["status"] for r in records] == ["ok", "error", "ok"]
    assert "truncated or corrupt" in records[1]["error"] and str(bad) in records[1]["error"]


def test_rerun_skips_what_is_done_and_rescores_what_changed(sweep_inputs, tmp_path):
    root, pack = sweep_inputs
    ckpts = tmp_path / "ckpts"
    shutil.copytree(root / "run", ckpts)
    first = run_sweep([str(ckpts)], pack, DISTANCES, tmp_path / "out", progress=False)
    done = sorted((tmp_path / "out" / DONE_DIR).glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in done]
    again = run_sweep([str(ckpts)], pack, DISTANCES, tmp_path / "out", progress=False)
    assert again == first and [p.stat().st_mtime_ns for p in done] == stamps
    shutil.copy(ckpts / "step0000002.safetensors", ckpts / "step0000006.safetensors")  # a changed file is scored again
    changed = run_sweep([str(ckpts)], pack, DISTANCES, tmp_path / "out", progress=False)
    assert changed[2]["ps"] == first[0]["ps"] and changed[2]["step"] == 2
    other = run_sweep([str(ckpts)], pack, ("spatial",), tmp_path / "out", progress=False)  # other settings: rescored
    assert all(set(r["ps"]) == {"spatial"} for r in other)


def test_records_of_an_older_sweep_are_reused_with_the_new_columns_empty(sweep_inputs, tmp_path):
    root, pack = sweep_inputs
    ckpts = tmp_path / "ckpts"
    shutil.copytree(root / "run", ckpts)
    out = tmp_path / "out"
    first = run_sweep([str(ckpts)], pack, DISTANCES, out, progress=False)
    done = sorted((out / DONE_DIR).glob("*.json"))
    old = json.loads(done[0].read_text())  # as the sweep wrote it before per-layer PS and JND mAP
    for key in ("ps_per_layer", "jnd_map"):
        del old[key]
    del old["settings"]["jnd_pairs"]
    done[0].write_text(json.dumps(old))
    stamp = done[0].stat().st_mtime_ns
    again = run_sweep([str(ckpts)], pack, DISTANCES, out, progress=False)
    assert done[0].stat().st_mtime_ns == stamp  # reused, not rescored
    assert again[0]["ps"] == first[0]["ps"] and again[0]["ps_per_layer"] is None and again[0]["jnd_map"] is None
    assert again[1:] == first[1:]
    rows = _csv_rows(out)
    assert rows[0]["ps_spatial"] and rows[0]["ps_spatial_l0"] == "" and rows[0]["jnd_map_spatial"] == ""
    assert rows[1]["ps_spatial_l0"] and rows[1]["jnd_map_spatial"]
    # the results.jsonl of an older sweep (no new keys at all) still reads and tabulates
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    (out / "results.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("ps_per_layer", "jnd_map")})
                                               + "\n" for r in lines))
    older = read_results(out)
    assert all(r["ps_per_layer"] is None and r["jnd_map"] is None for r in older)
    assert "ps_style_l0" not in csv_text(older).splitlines()[0] and "jnd_map_style" in csv_text(older).splitlines()[0]
    assert "JND" not in format_results(older) and "JND spatial" in format_results(again)


def test_without_jnd_data_the_jnd_columns_are_empty(sweep_inputs, tmp_path):
    root, pack = sweep_inputs
    make_bapps(tmp_path / "bapps", triplets=4, jnd=0, progress=False)
    [r] = run_sweep([str(root / "run" / "step0000002.safetensors")], tmp_path / "bapps", ("spatial",), tmp_path / "out",
                    progress=False)
    assert r["status"] == "ok" and r["jnd_map"] is None and len(r["ps_per_layer"]["spatial"]) > 1
    [row] = _csv_rows(tmp_path / "out")
    assert row["jnd_map_spatial"] == "" and row["ps_spatial_l0"] != ""


_SLOW_SWEEP = """
import sys, time
from perceptual_fast.study.sweep import runner
score = runner._Sweep.score
def slow(self, path, loaded):
    record = score(self, path, loaded)
    time.sleep(0.4)
    return record
runner._Sweep.score = slow
runner.run_sweep([sys.argv[1]], sys.argv[2], ("spatial", "meanpool", "style"), sys.argv[3], progress=False)
"""


def test_sigkill_mid_sweep_then_rerun_loses_and_duplicates_nothing(sweep_inputs, tmp_path):
    root, pack = sweep_inputs
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    for i in range(8):  # eight checkpoint files (copies of three weights), scored slowly enough to kill mid-way
        shutil.copy(root / "run" / f"step{2 * (i % 3 + 1):07d}.safetensors", ckpts / f"c{i}.safetensors")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SWEEP, str(ckpts), str(pack), str(out)])
    deadline = time.time() + 120
    while len(list((out / DONE_DIR).glob("*.json"))) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in (out / DONE_DIR).glob("*.json")}
    assert 2 <= len(done) < 8 and not (out / "results.jsonl").exists()
    for p in done:
        assert json.loads(p.read_text())["status"] == "ok"  # every record on disk is whole
    records = run_sweep([str(ckpts)], pack, DISTANCES, out, progress=False)
    assert [os.path.basename(r["checkpoint"]) for r in records] == [f"c{i}.safetensors" for i in range(8)]
    assert len(list((out / DONE_DIR).glob("*.json"))) == 8
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # nothing done before the kill was redone
    clean = run_sweep([str(ckpts)], pack, DISTANCES, tmp_path / "clean", progress=False)
    assert [r["ps"] for r in records] == [r["ps"] for r in clean]


def test_torchrun_two_ranks_give_the_single_process_table(sweep_inputs, tmp_path):
    root, pack = sweep_inputs
    args = [str(root / "run"), str(root / "exported"), "--data", str(pack), "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "perceptual_fast.cli", "sweep", *args, "-o", str(tmp_path / "ddp")],
                         capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("step0000002.safetensors") == 1  # rank 0 alone prints the merged table
    single = run_sweep(args[:2], pack, DISTANCES, tmp_path / "single", device="cpu", progress=False)
    merged = read_results(tmp_path / "ddp")
    assert len(merged) == 4
    for a, b in zip(_strip(merged), _strip(single)):
        assert a["checkpoint"] == b["checkpoint"] and a["step"] == b["step"] and a["status"] == b["status"] == "ok"
        assert a["ps"] == pytest.approx(b["ps"], abs=1e-9)
        assert all(a["two_afc"][d] == pytest.approx(b["two_afc"][d], abs=1e-9) for d in DISTANCES)
    # every checkpoint has its own record, written by the rank that scored it
    assert len(list((tmp_path / "ddp" / DONE_DIR).glob("*.json"))) == 4
