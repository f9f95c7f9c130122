"""The reference against the `lpips` package itself: same random trunk weights, the package's
shipped v0.1 lin weights, real photos of several sizes (square and not)."""

import pytest
import torch

import perceptual_fast as pf

BATCHES = [
    (("astronaut", "coffee", "chelsea", "rocket"), (64, 64)),
    (("camera", "coffee", "astronaut"), (96, 80)),
    (("chelsea", "rocket"), (128, 160)),
]


def relative_error(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("trunk", ["alexnet", "vgg16", "squeezenet1_1"])
def test_lpips_and_spatial_match_the_lpips_package(trunk, backend, photos, distorted, lpips_like):
    scorer = pf.Scorer(trunk, weights="random", seed=3, lin="lpips", distances=("lpips", "spatial"), backend=backend)
    with_lin = lpips_like(scorer.trunk, trunk, use_lin=True)
    without_lin = lpips_like(scorer.trunk, trunk, use_lin=False)
    for i, (names, size) in enumerate(BATCHES):
        x0 = photos(names, size, seed=i)
        x1 = distorted(x0, ["noise", "blur", "shift"][i], [0.1, 1, 0.2][i], seed=i)
        ours = scorer.distance(x0, x1, per_layer=True)
        with torch.no_grad():
            total_lin, layers_lin = with_lin(x0, x1, retPerLayer=True)
            total_raw, layers_raw = without_lin(x0, x1, retPerLayer=True)
        ref_lin = torch.stack([t.flatten() for t in layers_lin], dim=1)
        ref_raw = torch.stack([t.flatten() for t in layers_raw], dim=1)
        assert ours["lpips"].shape == ref_lin.shape == (len(names), len(layers_lin))
        for layer in range(ref_lin.shape[1]):
            assert relative_error(ours["lpips"][:, layer], ref_lin[:, layer]) < 1e-5, (size, layer)
            assert relative_error(ours["spatial"][:, layer], ref_raw[:, layer]) < 1e-5, (size, layer)
        assert relative_error(ours["lpips"].sum(1), total_lin.flatten()) < 1e-5
        assert relative_error(ours["spatial"].sum(1), total_raw.flatten()) < 1e-5
        assert float(total_lin.min()) > 0  # real, non-trivial distances were compared


def test_lpips_weights_are_really_the_shipped_ones(lpips_like):
    """With different lin weights the distances must differ: the check above would catch a lin mix-up."""
    scorer = pf.Scorer("alexnet", weights="random", lin="lpips", distances=("lpips",))
    uniform = pf.Scorer("alexnet", weights="random", lin=[torch.ones(c) for c in (64, 192, 384, 256, 256)], distances=("lpips",))
    x0, x1 = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    assert not torch.allclose(scorer.distance(x0, x1)["lpips"], uniform.distance(x0, x1)["lpips"], rtol=1e-3)
