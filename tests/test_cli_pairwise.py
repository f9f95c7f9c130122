"""perceptual-fast pairwise: matrices, pair rows, diversity and nearest neighbours, against Scorer.pairwise."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import perceptual_fast as pf
from perceptual_fast.cli import main


def _folder(path, photos, names, seed, size=(40, 48)):
    path.mkdir()
    batch = photos(names, size, seed=seed)
    images = ((batch + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    for name, image in zip(names, images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path / f"{name}.png")
    return images  # what the files hold, uint8 [N, 3, H, W] in name order


NAMES = ["astronaut", "camera", "chelsea", "coffee", "rocket"]
ARGS = ["--weights", "random", "--distance", "spatial,meanpool", "--quiet", "--block", "2"]


def test_one_folder_matrices_rows_diversity_and_nearest(tmp_path, photos, capsys):
    images = _folder(tmp_path / "x", photos, NAMES, seed=1)
    prefix = tmp_path / "out" / "m"
    assert main(["pairwise", str(tmp_path / "x"), *ARGS, "--npy", str(prefix), "--csv", str(tmp_path / "pairs.csv"),
                 "--diversity", "--nearest", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = pf.Scorer("alexnet", weights="random", distances=("spatial", "meanpool")).pairwise(images)
    names = [f"{n}.png" for n in NAMES]
    assert json.loads((tmp_path / "out" / "m.names.json").read_text()) == {"rows": names, "columns": names}
    for d in ("spatial", "meanpool"):
        matrix = np.load(f"{prefix}.{d}.npy")  # tiles of 2 x 2 images, mirrored below the diagonal
        np.testing.assert_allclose(matrix, want[d].numpy(), rtol=1e-9, atol=0)
        assert (np.diag(matrix) == 0).all()
        upper = want[d][torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)]
        # diversity: the mean over the 10 pairs, and the jackknife over images computed the long way
        loo = torch.stack([want[d][[j for j in range(5) if j != i]][:, [j for j in range(5) if j != i]]
                           .triu(1).sum() / 6 for i in range(5)])
        se = math.sqrt(4 / 5 * float(((loo - loo.mean()) ** 2).sum()))
        assert doc["diversity"][d] == pytest.approx({"mean": float(upper.mean()), "se": se, "pairs": 10, "images": 5})
    rows = list(csv.reader(open(tmp_path / "pairs.csv")))
    assert rows[0] == ["a", "b", "spatial", "meanpool"] and len(rows) == 1 + 10  # each pair once
    assert float(rows[1][2]) == pytest.approx(float(want["spatial"][0, 1]), rel=1e-9)
    nearest = doc["nearest"]
    assert nearest["rank_by"] == "spatial" and nearest["k"] == 2
    for q, query in enumerate(nearest["queries"]):
        order = [j for j in torch.argsort(want["spatial"][:, q]).tolist() if j != q][:2]  # itself excluded
        assert query["query"] == names[q] and [m["image"] for m in query["matches"]] == [names[j] for j in order]
        assert query["matches"][0]["spatial"] == pytest.approx(float(want["spatial"][order[0], q]), rel=1e-9)


def test_two_folders_and_a_printed_matrix(tmp_path, photos, capsys):
    x = _folder(tmp_path / "x", photos, NAMES[:3], seed=1)
    y = _folder(tmp_path / "y", photos, NAMES[2:], seed=2)
    assert main(["pairwise", str(tmp_path / "x"), str(tmp_path / "y"), *ARGS, "--nearest", "1", "--rank-by", "meanpool",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = pf.Scorer("alexnet", weights="random", distances=("spatial", "meanpool")).pairwise(x, y)
    for q, query in enumerate(doc["nearest"]["queries"]):  # for each image of y, its nearest in x
        best = int(torch.argmin(want["meanpool"][:, q]))
        assert query["matches"] == [{"image": f"{NAMES[best]}.png", "meanpool": pytest.approx(float(want["meanpool"][best, q]))}]
    assert main(["pairwise", str(tmp_path / "x"), str(tmp_path / "y"), *ARGS]) == 0
    out = capsys.readouterr().out
    assert "3 x 3 images, trunk alexnet" in out and "spatial:" in out and "coffee.png" in out


def test_pairwise_errors_name_the_problem(tmp_path, photos, capsys):
    _folder(tmp_path / "x", photos, NAMES[:2], seed=1)
    _folder(tmp_path / "y", photos, NAMES[:2], seed=1, size=(32, 32))
    (tmp_path / "empty").mkdir()
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.png").write_bytes((tmp_path / "x" / "camera.png").read_bytes())
    # more neighbours asked than there are: K is what exists (2 images, itself excluded: 1)
    assert main(["pairwise", str(tmp_path / "x"), *ARGS, "--nearest", "5", "--json"]) == 0
    near = json.loads(capsys.readouterr().out)["nearest"]
    assert near["k"] == 1 and [len(q["matches"]) for q in near["queries"]] == [1, 1]
    cases = [
        (["pairwise", str(tmp_path / "x"), str(tmp_path / "y"), *ARGS], "the spatial distance compares maps position by "
         "position: both image sets need the same size"),
        (["pairwise", str(tmp_path / "x"), str(tmp_path / "y"), *ARGS, "--diversity"], "--diversity is the mean over "
         "the pairs of one folder: give DIR alone"),
        (["pairwise", str(tmp_path / "empty"), *ARGS], "holds no images"),
        (["pairwise", str(tmp_path / "x"), *ARGS, "--nearest", "1", "--rank-by", "style"], "--rank-by 'style' is not one "
         "of the distances computed (spatial, meanpool)"),
        (["pairwise", str(tmp_path / "one"), *ARGS, "--diversity"], "--diversity needs at least 2 images"),
        (["pairwise", str(tmp_path / "x"), *ARGS, "--block", "0", "--npy", str(tmp_path / "m")],
         "--block must be a positive number of images; got 0"),
    ]
    for args, message in cases:
        assert main(args) == 2
        assert message in capsys.readouterr().err
