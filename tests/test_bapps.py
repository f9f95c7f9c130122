"""The BAPPS reader (published layout, pairing by name, clear errors), make-bapps, the bapps
evaluation and its command."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import perceptual_fast as pf
from perceptual_fast.bapps.evaluate import evaluate_bapps
from perceptual_fast.bapps.reader import ImageFiles, read_bapps
from perceptual_fast.bapps.synthetic import RULE, make_bapps
from perceptual_fast.cli import main


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_bapps(tmp_path_factory.mktemp("bapps") / "src", triplets=9, jnd=8, train=3, categories=("color", "blocks"),
                      progress=False)


@pytest.fixture
def folder(source, tmp_path):
    """A fresh copy each test may damage."""
    return shutil.copytree(source, tmp_path / "bapps")


def test_make_bapps_writes_the_published_layout_labelled_synthetic(source):
    assert "SYNTHETIC" in (source / "SYNTHETIC.txt").read_text() == RULE + "\n"
    cat = source / "2afc" / "val" / "color"
    assert sorted(p.name for p in cat.iterdir()) == ["judge", "p0", "p1", "ref"]
    assert sorted(p.name for p in (cat / "ref").iterdir()) == [f"{i:06d}.png" for i in range(9)]
    with Image.open(cat / "p0" / "000003.png") as img:
        assert img.size == (256, 256) and img.mode == "RGB"
    judge = np.load(cat / "judge" / "000003.npy")
    assert judge.shape == (1,) and judge.dtype == np.float32 and 0 <= judge[0] <= 1
    assert sorted(p.name for p in (source / "jnd" / "val" / "blocks").iterdir()) == ["p0", "p1", "same"]
    assert len(list((source / "2afc" / "train" / "blocks" / "ref").iterdir())) == 3
    # item 7 of each category is a tie: p1 is p0
    assert np.array_equal(np.asarray(Image.open(cat / "p0" / "000007.png")), np.asarray(Image.open(cat / "p1" / "000007.png")))


def test_make_bapps_is_deterministic_and_refuses_a_non_empty_folder(source, tmp_path):
    again = make_bapps(tmp_path / "again", triplets=9, jnd=8, train=3, categories=("color", "blocks"))
    for rel in ("2afc/val/blocks/p1/000004.png", "jnd/val/color/same/000002.npy"):
        assert (again / rel).read_bytes() == (source / rel).read_bytes()
    with pytest.raises(ValueError, match="exists and is not empty"):
        make_bapps(again, triplets=2)
    with pytest.raises(ValueError, match="unknown categories"):
        make_bapps(tmp_path / "x", categories=("sepia",))


def test_reader_resizes_like_the_lpips_loader_and_pairs_by_name(source):
    data = read_bapps(source)
    assert data.synthetic and "SYNTHETIC" in data.note and data.size == 64
    assert set(data.parts) == {"2afc/val", "jnd/val"}  # train only when asked
    part = data.parts["2afc/val"]
    assert part.categories == ("blocks", "color") and part.category.tolist() == [0] * 9 + [1] * 9
    assert part.names[9] == "000000" and part.images["ref"].shape == (18, 64, 64, 3)
    with Image.open(source / "2afc/val/color/p1/000005.png") as img:
        want = np.asarray(img.convert("RGB").resize((64, 64), Image.BILINEAR))
    assert np.array_equal(part.images["p1"][9 + 5].numpy(), want)
    assert float(part.target[9 + 5]) == float(np.load(source / "2afc/val/color/judge/000005.npy")[0])
    assert read_bapps(source, size=32, splits=("all",)).parts["2afc/train"].images["p0"].shape == (6, 32, 32, 3)


def test_a_folder_part_decodes_as_used_in_order_and_a_few_batches_ahead(source, monkeypatch):
    part = read_bapps(source).parts["2afc/val"]
    assert part.on_disk and not part.materialized().on_disk
    decoded, consumed, worst = [0], [0], [0]
    decode = ImageFiles.decode

    def counted(self, i):
        decoded[0] += 1
        worst[0] = max(worst[0], decoded[0] - consumed[0])
        return decode(self, i)

    monkeypatch.setattr(ImageFiles, "decode", counted)
    starts = []
    for start, batch in part.batches(4, workers=2, ahead=1):
        starts.append(start)
        consumed[0] += 3 * batch["ref"].shape[0]
    assert starts == [0, 4, 8, 12, 16] and decoded[0] == 3 * 18
    assert worst[0] <= 3 * 4 * (1 + 1)  # the batch held plus one ahead, 3 image kinds
    monkeypatch.setattr(ImageFiles, "decode", decode)
    whole = part.materialized()
    for start, batch in part.batches(5, workers=2):
        for k, v in whole.batch(start, start + 5).items():
            assert torch.equal(batch[k], v), (start, k)


def test_reader_does_not_misalign_when_a_file_is_missing(folder):
    (folder / "2afc/val/color/judge/000004.npy").unlink()
    with pytest.raises(ValueError, match=r"color.*000004: missing from judge/ \(found ref/000004.png, p0/000004.png, p1/000004.png\)"):
        read_bapps(folder)


def test_reader_names_extra_unreadable_and_bad_files(folder):
    extra = folder / "jnd/val/blocks/p0/000099.png"
    shutil.copy(folder / "jnd/val/blocks/p0/000001.png", extra)
    with pytest.raises(ValueError, match="000099: missing from p1/, same/"):
        read_bapps(folder)
    extra.unlink()
    (folder / "jnd/val/blocks/p1/000002.png").write_bytes(b"\x89PNG truncated")
    on_disk = read_bapps(folder).parts["jnd/val"]  # listing reads no image: the bad one fails when decoded
    with pytest.raises(ValueError, match=r"cannot read image .*jnd/val/blocks/p1/000002.png"):
        on_disk.materialized()
    shutil.copy(folder / "jnd/val/blocks/p0/000002.png", folder / "jnd/val/blocks/p1/000002.png")
    np.save(folder / "jnd/val/color/same/000003.npy", np.array([1.5]))
    with pytest.raises(ValueError, match=r"same/000003.npy' holds 1.5; expected a fraction in \[0, 1\]"):
        read_bapps(folder)
    np.save(folder / "jnd/val/color/same/000003.npy", np.array([0.5]))
    (folder / "2afc/val/color/ref/notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unexpected file .*notes.txt"):
        read_bapps(folder)


def test_reader_says_what_layout_it_expects(tmp_path):
    with pytest.raises(ValueError, match=r"holds no BAPPS split val: expected 2afc/\{train,val\}/<category>.*make-bapps"):
        read_bapps(tmp_path)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        read_bapps(tmp_path, splits=("test",))


def test_evaluation_per_layer_terms_come_from_the_same_pass_and_sum_to_the_total(source):
    data = read_bapps(source)
    scorer = pf.Scorer("alexnet", weights="random", distances=("spatial", "meanpool", "style"))
    calls = []
    forward = scorer.trunk.forward_taps
    scorer.trunk.forward_taps = lambda x: calls.append(x.shape[0]) or forward(x)
    result = evaluate_bapps(data, scorer, baselines=("l2",), per_layer=True, batch_size=5)
    assert calls == [15, 15, 15, 9, 10, 10, 10, 2]  # 3 x 5 triplets per pass, then 2 x 5 jnd pairs: one pass per image
    part = data.parts["2afc/val"]
    direct = scorer.score({k: part.batch(0, 18)[k] for k in ("ref", "p0", "p1", "judge")})
    res = result.parts["2afc/val"]
    for name in scorer.distances:
        assert torch.equal(res.distances["d0"][name], direct["d0"][name])
        cats = [float(direct["2afc"][name][part.category == c].mean()) for c in range(2)]
        assert res.scores[name] == pytest.approx(cats, rel=1e-12)
        assert res.summary[name] == pytest.approx(50 * sum(cats), rel=1e-12)
        assert len(res.layer_scores[name]) == 5 and len(res.layer_summary[name]) == 5
    assert "l2" in res.scores and "l2" not in res.layer_scores
    first_layer = pf.metrics.two_afc(*(scorer.score(part.batch(0, 18), per_layer=True)[k]["style"][:, 0] for k in ("d0", "d1")),
                                  part.target)
    assert res.layer_scores["style"][0][0] == pytest.approx(float(first_layer[:9].mean()), rel=1e-12)


def test_bf16_scorer_stays_float32_and_close_to_fp32(source):
    part = read_bapps(source).parts["2afc/val"]
    batch = part.batch(0, 18)
    fp32 = pf.Scorer("alexnet", weights="random", distances=("spatial", "style")).score(batch)
    bf16 = pf.Scorer("alexnet", weights="random", distances=("spatial", "style"), precision="bf16").score(batch)
    for name in ("spatial", "style"):
        assert bf16["d0"][name].dtype == torch.float32
        assert not torch.equal(bf16["d0"][name], fp32["d0"][name])  # really ran in bf16
        scale = float(fp32["d0"][name].abs().max())
        torch.testing.assert_close(bf16["d0"][name], fp32["d0"][name], rtol=0.05, atol=0.05 * scale)  # bf16: 8-bit mantissa
    with pytest.raises(ValueError, match="precision 'fp16' runs on CUDA devices"):  # (tests/test_precision.py)
        pf.Scorer("alexnet", weights="random", precision="fp16")


def test_bapps_command_table_json_and_csv(source, tmp_path, capsys):
    out_csv = tmp_path / "scores.csv"
    args = ["bapps", str(source), "--weights", "random", "--distance", "spatial,style,ssim", "--quiet"]
    assert main([*args, "--per-layer", "--csv", str(out_csv)]) == 0
    table = capsys.readouterr().out
    assert "SYNTHETIC data (not human judgements)" in table and "2afc/val (18 triplets)" in table
    assert "jnd/val (16 pairs): JND mAP" in table and "style[4]" in table and "PS" in table
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["data"] == "SYNTHETIC" and doc["distances"] == ["spatial", "style", "ssim"]
    assert set(doc["parts"]["2afc/val"]["2afc"]["ssim"]) == {"blocks", "color"}
    ps = doc["parts"]["2afc/val"]["ps"]["spatial"]
    assert ps == pytest.approx(50 * sum(doc["parts"]["2afc/val"]["2afc"]["spatial"].values()))
    rows = list(csv.DictReader(out_csv.open()))
    ps_row = [r for r in rows if r["part"] == "2afc/val" and r["distance"] == "spatial" and r["layer"] == "" and r["metric"] == "ps"]
    assert float(ps_row[0]["value"]) == pytest.approx(ps) and ps_row[0]["n"] == "18"
    assert any(r["layer"] == "4" and r["metric"] == "jnd_map" for r in rows)


def test_bapps_command_scores_dists_like_the_scorer(source, capsys):
    """`bapps --trunk dists_vgg16 --lin dists --distance dists`: the PS the Scorer's own evaluation gives."""
    args = ["bapps", str(source), "--trunk", "dists_vgg16", "--weights", "random", "--lin", "dists",
            "--distance", "dists,spatial", "--json", "--quiet"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    scorer = pf.Scorer("dists_vgg16", weights="random", lin="dists", distances=("dists", "spatial"))
    alone = evaluate_bapps(read_bapps(source), scorer, progress=False).parts["2afc/val"]
    assert doc["parts"]["2afc/val"]["ps"] == pytest.approx(alone.summary, rel=1e-9)
    assert set(doc["parts"]["2afc/val"]["ps"]) == {"dists", "spatial"}


def test_bapps_command_errors_name_the_fix(source, tmp_path, capsys):
    assert main(["bapps", str(tmp_path), "--weights", "random", "--quiet"]) == 2
    assert "holds no BAPPS split" in capsys.readouterr().err
    assert main(["bapps", str(source), "--quiet"]) == 2
    assert "needs weights" in capsys.readouterr().err
