"""``perceptual-fast score`` at scale: the streaming pipeline's memory bound, error rows and exit codes,
incremental CSV/JSONL, and a SIGKILL mid-run followed by ``--resume``."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import perceptual_fast as pf
from perceptual_fast.bapps.evaluate import evaluate_bapps
from perceptual_fast.bapps.pack import load_pack, pack_folder
from perceptual_fast.bapps.synthetic import make_bapps
from perceptual_fast.cli import main
from perceptual_fast.cli.score_sources import BappsPairs
from perceptual_fast.util.pipeline import DecodeStats, decoded_batches


def _folders(tmp_path, n, size=(32, 32), seed=0):
    """Two folders x/ and y/ of ``n`` random PNG pairs named p000.png ..."""
    rng = np.random.default_rng(seed)
    for d in ("x", "y"):
        (tmp_path / d).mkdir(exist_ok=True)
    for i in range(n):
        for d in ("x", "y"):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / d / f"p{i:03d}.png")
    return tmp_path / "x", tmp_path / "y"


@pytest.mark.parametrize("count", [40, 400])
def test_the_pipeline_holds_a_bounded_number_of_pairs_whatever_the_data(tmp_path, count):
    """Peak decoded pairs held = window + max_pending at most, for 40 pairs as for 400 (mixed sizes, so
    buckets wait); every pair comes out once."""
    x, y = _folders(tmp_path, 8)
    sizes = [(16, 16), (24, 16), (16, 24)]
    for i, s in enumerate(sizes):
        for d in (x, y):
            Image.new("RGB", s, (i * 40, 0, 0)).save(d / f"s{i}.png")
    names = [f"p{i % 8:03d}.png" if i % 3 else f"s{i % 3}.png" for i in range(count)]
    pairs = [(f"{n}#{i}", x / n, y / n) for i, n in enumerate(names)]
    stats = DecodeStats()
    seen = []
    for batch in decoded_batches(pairs, batch_size=4, window=8, max_pending=8, stats=stats):
        assert batch.a is not None and batch.a.shape == batch.b.shape and len(batch.pairs) <= 4
        seen += [p[0] for p in batch.pairs]
    assert sorted(seen) == sorted(p[0] for p in pairs)
    assert 0 < stats.peak_held <= 8 + 8


def test_unreadable_pairs_become_error_rows_and_exit_3(tmp_path, capsys):
    x, y = _folders(tmp_path, 5)
    (x / "p002.png").write_bytes(b"\x89PNG broken")
    Image.new("RGB", (20, 20)).save(y / "p003.png")  # another size than its partner
    out = tmp_path / "out.csv"
    code = main(["score", str(x), str(y), "--weights", "random", "--csv", str(out), "--batch-size", "2", "--quiet"])
    assert code == 3
    rows = {r["name"]: r for r in csv.DictReader(open(out))}
    assert set(rows) == {f"p{i:03d}.png" for i in range(5)}
    assert "cannot read image" in rows["p002.png"]["error"] and rows["p002.png"]["spatial"] == ""
    assert "pass --size N" in rows["p003.png"]["error"]
    assert all(float(rows[n]["spatial"]) > 0 and rows[n]["error"] == "" for n in ("p000.png", "p001.png", "p004.png"))
    err = capsys.readouterr().err
    assert "3 pairs scored, 2 failed" in err and "p002.png: cannot read image" in err


def test_jsonl_rows_carry_per_layer_terms_that_sum_to_the_distance(tmp_path):
    x, y = _folders(tmp_path, 3, size=(40, 36))
    out = tmp_path / "out.jsonl"
    assert main(["score", str(x), str(y), "--weights", "random", "--jsonl", str(out), "--per-layer", "--distance",
                 "spatial,style", "--quiet"]) == 0
    rows = [json.loads(line) for line in open(out)]
    assert [r["name"] for r in rows] == ["p000.png", "p001.png", "p002.png"]
    assert all(len(r["spatial"]) == 5 and r["error"] == "" for r in rows)


_SCORE = [sys.executable, "-m", "perceptual_fast.cli", "score"]


def test_sigkill_mid_run_then_resume_scores_every_pair_once(tmp_path):
    """A run killed with SIGKILL keeps the rows it flushed; --resume scores the rest; the file then equals
    an uninterrupted run's, row for row (same values)."""
    x, y = _folders(tmp_path, 48, size=(64, 64))
    opts = ["--weights", "random", "--batch-size", "2", "--workers", "1", "--quiet"]
    killed = tmp_path / "killed.csv"
    proc = subprocess.Popen(_SCORE + [str(x), str(y), "--csv", str(killed)] + opts, cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and (not killed.exists() or killed.read_text().count("\n") < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = killed.read_text().count("\n") - 1
    assert 4 <= partial < 48, "the run must be killed mid-way"
    resumed = subprocess.run(_SCORE + [str(x), str(y), "--csv", str(killed), "--resume"] + opts, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stderr
    whole = tmp_path / "whole.csv"
    assert main(["score", str(x), str(y), "--csv", str(whole)] + opts) == 0
    got = {r["name"]: r for r in csv.DictReader(open(killed))}
    want = {r["name"]: r for r in csv.DictReader(open(whole))}
    assert len(list(csv.DictReader(open(killed)))) == 48 and got.keys() == want.keys()
    for name in want:
        assert float(got[name]["spatial"]) == pytest.approx(float(want[name]["spatial"]), rel=1e-6)


def test_resume_onto_other_columns_is_an_error(tmp_path, capsys):
    x, y = _folders(tmp_path, 2)
    out = tmp_path / "out.csv"
    assert main(["score", str(x), str(y), "--weights", "random", "--csv", str(out), "--quiet"]) == 0
    assert main(["score", str(x), str(y), "--weights", "random", "--csv", str(out), "--resume", "--distance", "style", "--quiet"]) == 2
    assert "same --distance and --per-layer" in capsys.readouterr().err


def test_a_pair_list_scores_its_rows_with_paths_relative_to_the_list(tmp_path):
    """The IQA toolkits' meta-file format: a,b[,name] rows; a missing file is an error row, not a stop."""
    x, y = _folders(tmp_path, 3)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "pairs.csv").write_text("ref,dist,name\n../x/p000.png,../y/p000.png,first\n"
                                     f"{x / 'p001.png'},../y/p001.png\n../x/p002.png,../y/missing.png,gone\n")
    out = tmp_path / "out.csv"
    assert main(["score", "--pairs", str(lists / "pairs.csv"), "--weights", "random", "--csv", str(out), "--quiet"]) == 3
    rows = {r["name"]: r for r in csv.DictReader(open(out))}
    assert float(rows["first"]["spatial"]) > 0 and rows["gone"]["error"] and len(rows) == 3
    folders = tmp_path / "folders.csv"
    assert main(["score", str(x), str(y), "--weights", "random", "--csv", str(folders), "--quiet"]) == 0
    want = {r["name"]: r for r in csv.DictReader(open(folders))}
    assert rows["first"]["spatial"] == want["p000.png"]["spatial"]


def test_16bit_pngs_score_like_their_8bit_rendition(tmp_path):
    """PIL's convert('RGB') once clipped 16-bit grey to 255 (distance 0.05 instead of ~1.7 on random images)."""
    rng = np.random.default_rng(3)
    for d in ("x", "y", "x8", "y8"):
        (tmp_path / d).mkdir()
    for d in ("x", "y"):
        v = rng.integers(0, 65536, (40, 40), dtype=np.uint16)
        Image.fromarray(v).save(tmp_path / d / "g.png")  # uint16 -> an I;16 PNG
        Image.fromarray(((v.astype(np.uint32) + 128) // 257).astype(np.uint8)).save(tmp_path / f"{d}8" / "g.png")
    out16, out8 = tmp_path / "16.csv", tmp_path / "8.csv"
    assert main(["score", str(tmp_path / "x"), str(tmp_path / "y"), "--weights", "random", "--csv", str(out16), "--quiet"]) == 0
    assert main(["score", str(tmp_path / "x8"), str(tmp_path / "y8"), "--weights", "random", "--csv", str(out8), "--quiet"]) == 0
    d16 = float(next(csv.DictReader(open(out16)))["spatial"])
    assert d16 == pytest.approx(float(next(csv.DictReader(open(out8)))["spatial"]), rel=1e-6) and d16 > 0.2


def test_torchrun_two_ranks_write_the_file_one_process_writes(tmp_path):
    """Under torchrun each rank scores every other pair into a part file; rank 0 merges them in input
    order into the same CSV (and JSONL) a single process writes; no part file is left."""
    x, y = _folders(tmp_path, 7, size=(40, 40))
    opts = ["--weights", "random", "--batch-size", "2", "--quiet"]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "perceptual_fast.cli", "score", str(x), str(y), "--csv", str(tmp_path / "two.csv"),
                          "--jsonl", str(tmp_path / "two.jsonl")] + opts,
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert main(["score", str(x), str(y), "--csv", str(tmp_path / "one.csv")] + opts) == 0
    two, one = list(csv.DictReader(open(tmp_path / "two.csv"))), list(csv.DictReader(open(tmp_path / "one.csv")))
    assert [r["name"] for r in two] == [r["name"] for r in one] == [f"p{i:03d}.png" for i in range(7)]
    for a, b in zip(two, one):
        assert float(a["spatial"]) == pytest.approx(float(b["spatial"]), rel=1e-5)
    assert [json.loads(line)["name"] for line in open(tmp_path / "two.jsonl")] == [r["name"] for r in one]
    assert not list(tmp_path.glob("*.part"))


@pytest.fixture(scope="module")
def small_bapps(tmp_path_factory):
    root = tmp_path_factory.mktemp("bapps")
    folder = make_bapps(root / "b", triplets=5, jnd=3, categories=("noise", "blur"), progress=False)
    return folder, pack_folder(folder, root / "b.safetensors", progress=False)


def test_a_bapps_folder_or_pack_scores_every_compared_pair_as_the_evaluation_does(small_bapps, tmp_path):
    """Rows ref-p0 and ref-p1 of each 2afc triplet and p0-p1 of each jnd pair, named by part, category and
    item; the same numbers from the folder and the pack, and the per-item distances ``bapps`` evaluates."""
    folder, pack = small_bapps
    opts = ["--weights", "random", "--batch-size", "4", "--distance", "spatial,style", "--quiet"]
    from_folder, from_pack = tmp_path / "folder.csv", tmp_path / "pack.csv"
    assert main(["score", str(folder), "--csv", str(from_folder)] + opts) == 0
    assert main(["score", str(pack), "--csv", str(from_pack)] + opts) == 0
    rows, packed = list(csv.DictReader(open(from_folder))), list(csv.DictReader(open(from_pack)))
    assert [r["name"] for r in rows][:3] == ["2afc/val/blur/000000:p0", "2afc/val/blur/000000:p1", "2afc/val/blur/000001:p0"]
    assert len(rows) == 2 * 10 + 6 and rows[-1]["name"] == "jnd/val/noise/000002"
    assert rows[0]["a"].endswith("2afc/val/blur/ref/000000.png") and rows[0]["b"].endswith("2afc/val/blur/p0/000000.png")
    assert packed[-1]["b"] == f"{pack}#jnd/val/p1/5"
    for r, p in zip(rows, packed):
        assert (r["name"], r["spatial"], r["style"]) == (p["name"], p["spatial"], p["style"])
    scorer = pf.Scorer("alexnet", weights="random", distances=("spatial", "style"))
    result = evaluate_bapps(load_pack(pack), scorer, batch_size=4, progress=False)
    by_name = {r["name"]: r for r in rows}
    part = result.parts["2afc/val"]
    for i, stem in enumerate(load_pack(pack).parts["2afc/val"].names):
        category = part.categories[i // 5]
        for side in ("d0", "d1"):
            got = float(by_name[f"2afc/val/{category}/{stem}:p{side[1]}"]["style"])
            assert got == pytest.approx(float(part.distances[side]["style"][i]), rel=1e-6)


def test_a_bapps_run_resumes_pair_by_pair_and_shards_by_item(small_bapps, tmp_path):
    """A file cut mid-triplet (one of its two rows written) resumes with the missing row only."""
    folder, _ = small_bapps
    opts = ["--weights", "random", "--batch-size", "3", "--quiet"]
    whole, cut = tmp_path / "whole.csv", tmp_path / "cut.csv"
    assert main(["score", str(folder), "--csv", str(whole)] + opts) == 0
    lines = whole.read_text().splitlines(keepends=True)
    cut.write_text("".join(lines[:8]) + lines[8][:20])  # header, 7 rows (3.5 triplets), half a row
    assert main(["score", str(folder), "--csv", str(cut), "--resume"] + opts) == 0
    got, want = list(csv.DictReader(open(cut))), list(csv.DictReader(open(whole)))
    assert sorted(r["name"] for r in got) == sorted(r["name"] for r in want) and len(got) == len(want)
    want_by_name = {r["name"]: r for r in want}
    for r in got:
        assert float(r["spatial"]) == pytest.approx(float(want_by_name[r["name"]]["spatial"]), rel=1e-6)
    source = BappsPairs.load(folder, 4, None, ("val",), 1)
    shares = [source.share(rank, 2) for rank in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(source.names)
    assert "2afc/val/blur/000000:p0" in shares[0] and "2afc/val/blur/000000:p1" in shares[0]  # a triplet stays whole
