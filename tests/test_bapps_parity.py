"""BAPPS evaluation against the `lpips` package's own scoring functions (lpips.trainer.score_2afc_dataset
and score_jnd_dataset) on a synthetic BAPPS folder, read the way the LPIPS loader reads it."""

import os

import numpy as np
import pytest
import torch

import perceptual_fast as pf
import perceptual_fast.metrics
from perceptual_fast.bapps.evaluate import evaluate_bapps
from perceptual_fast.bapps.reader import read_bapps
from perceptual_fast.bapps.synthetic import make_bapps

CATEGORIES = ("noise", "blur")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_bapps(tmp_path_factory.mktemp("bapps") / "data", triplets=16, jnd=16, categories=CATEGORIES, progress=False)


class LpipsStyleLoader:
    """What the reference repo's data loader yields: per category, files listed per subfolder and
    sorted, each image resized with torchvision's Resize(64) on the PIL image, ToTensor, Normalize
    to [-1, 1]; judgements as float32 [1, 1, 1]; batches of 5 (so batches cross nothing odd)."""

    def __init__(self, category_dir, image_dirs, target):
        import torchvision.transforms as T
        from PIL import Image

        transform = T.Compose([T.Resize(64), T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
        listing = {d: sorted(os.path.join(category_dir, d, f) for f in os.listdir(os.path.join(category_dir, d)))
                   for d in (*image_dirs, target)}
        self.items = []
        for i in range(len(listing[target])):
            item = {d: transform(Image.open(listing[d][i]).convert("RGB")) for d in image_dirs}
            item[target] = torch.FloatTensor(np.load(listing[target][i]).reshape((1, 1, 1)))
            self.items.append(item)

    def load_data(self):
        return torch.utils.data.DataLoader(self.items, batch_size=5, shuffle=False)


@pytest.mark.parametrize("use_lin", [False, True])
def test_2afc_and_jnd_equal_the_lpips_package(folder, lpips_like, use_lin):
    trainer = pytest.importorskip("lpips.trainer", exc_type=ModuleNotFoundError)
    name = "lpips" if use_lin else "spatial"
    scorer = pf.Scorer("alexnet", weights="random", seed=5, lin="lpips" if use_lin else None, distances=(name,))
    model = lpips_like(scorer.trunk, "alexnet", use_lin=use_lin)
    data = read_bapps(folder)
    result = evaluate_bapps(data, scorer, progress=False)
    two_afc, jnd = result.parts["2afc/val"], result.parts["jnd/val"]
    assert two_afc.categories == jnd.categories == sorted(CATEGORIES)
    d0, d1 = two_afc.distances["d0"][name], two_afc.distances["d1"][name]
    assert int((d0 == d1).sum()) >= 2 and bool((d0 < d1).any()) and bool((d1 < d0).any())  # ties and both orders
    for c, category in enumerate(two_afc.categories):
        with torch.no_grad():
            ref_score, ref = trainer.score_2afc_dataset(
                LpipsStyleLoader(folder / "2afc" / "val" / category, ("ref", "p0", "p1"), "judge"), model.forward)
            # the package's JND scorer needs [N] distances (LPIPS returns [N, 1, 1, 1]): flatten them
            ref_map, _ = trainer.score_jnd_dataset(
                LpipsStyleLoader(folder / "jnd" / "val" / category, ("p0", "p1"), "same"), lambda a, b: model(a, b).flatten())
        mask = data.parts["2afc/val"].category == c
        ours = pf.metrics.two_afc(d0[mask], d1[mask], data.parts["2afc/val"].target[mask])
        np.testing.assert_array_equal(ours.numpy(), ref["scores"])  # per triplet, ties (0.5) included
        assert two_afc.scores[name][c] == pytest.approx(ref_score, rel=1e-12, abs=0)
        assert jnd.scores[name][c] == ref_map
    assert two_afc.summary[name] == pytest.approx(100 * np.mean(two_afc.scores[name]), rel=1e-12)

