"""DISTS against the `DISTS_pytorch` package itself: the same random VGG-16 weights in both, the
package's shipped alpha/beta, real photos of several sizes (square and not), distorted, nearly
identical and identical."""

import pytest
import torch
from dists_package import package_dists

import perceptual_fast as pf

BATCHES = [
    (("astronaut", "coffee", "chelsea"), (64, 64)),
    (("camera", "coffee"), (96, 80)),
    (("chelsea", "rocket"), (75, 131)),
]


@pytest.fixture
def dists_like():
    """``make(trunk_module)``: the package's DISTS with our trunk's weights (``dists_package.package_dists``)."""
    pytest.importorskip("torchvision", exc_type=ModuleNotFoundError)
    pytest.importorskip("DISTS_pytorch.DISTS_pt", exc_type=ModuleNotFoundError)
    return package_dists


def _pairs(photos, distorted):
    for i, (names, size) in enumerate(BATCHES):
        x0 = (photos(names, size, seed=i) + 1) / 2  # [0, 1], DISTS's convention
        x1 = ((distorted(x0 * 2 - 1, ["noise", "blur", "shift"][i], [0.1, 1, 0.2][i], seed=i) + 1) / 2).clamp(0, 1)
        yield f"{size} distorted", x0, x1
    x0 = (photos(BATCHES[0][0], (64, 64), seed=9) + 1) / 2
    near = (x0 + 1e-3 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))).clamp(0, 1)
    yield "nearly identical", x0, near
    yield "identical", x0, x0.clone()


@pytest.mark.parametrize("precision,backend", [("fp64", "torch"), ("fp32", "torch"), ("fp32", "auto")])
def test_dists_matches_the_package(precision, backend, photos, distorted, dists_like):
    scorer = pf.Scorer("dists_vgg16", weights="random", seed=5, lin="dists", distances=("dists",), precision=precision,
                       backend=backend, input_range="0,1")
    model = dists_like(scorer.trunk)
    dtype = torch.float64 if precision == "fp64" else torch.float32
    model = model.to(dtype)
    for label, x0, x1 in _pairs(photos, distorted):
        ours = scorer.distance(x0, x1)["dists"].double()
        with torch.no_grad():
            ref = model(x0.to(dtype), x1.to(dtype)).double().reshape(-1)
        if label == "identical":  # the difference form gives exactly 0; the package, rounding of 1 - sum
            assert float(ours.abs().max()) == 0.0
            assert float(ref.abs().max()) < (1e-12 if precision == "fp64" else 2e-5)
        elif precision == "fp64":
            torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0, msg=label)
            assert float(ref.min()) > 0  # real, non-trivial distances were compared
        else:  # DISTS is 1 minus a sum near 1: float32 cancellation in the package costs ~1e-4 relative
            torch.testing.assert_close(ours, ref, rtol=0, atol=2e-5, msg=label)


def test_a_torchvision_vgg16_checkpoint_loads_strictly(tmp_path, monkeypatch):
    """DISTS uses torchvision's ImageNet VGG-16: its file in the hub cache loads into dists_vgg16 as it is
    (the L2 pooling has no parameters), logits included, and the taps are DISTS's stages of it."""
    torchvision = pytest.importorskip("torchvision", exc_type=ModuleNotFoundError)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    reference = torchvision.models.vgg16(weights=None).eval()
    torch.save(reference.state_dict(), folder / "vgg16-397923af.pth")
    ours = pf.load_trunk("dists_vgg16", weights="torchvision")
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in reference.state_dict().items())
    assert set(ours.state_dict()) == set(reference.state_dict())
    x = torch.rand(1, 3, 70, 90) * 2 - 1
    with torch.no_grad():
        taps = ours.forward_taps(x)
        torch.testing.assert_close(taps[0], (x * torch.tensor(pf.preprocess.SCALE).view(1, 3, 1, 1)
                                             + torch.tensor(pf.preprocess.SHIFT).view(1, 3, 1, 1) + 1) / 2)
        assert ours(x).shape == (1, 1000)
    assert [tuple(t.shape[1:]) for t in taps] == ours.tap_shapes(70, 90) == [
        (3, 70, 90), (64, 70, 90), (128, 35, 45), (256, 18, 23), (512, 9, 12), (512, 5, 6)]


def test_dists_layer_terms_sum_to_the_score(photos, distorted):
    scorer = pf.Scorer("dists_vgg16", weights="random", seed=5, lin="dists", distances=("dists",), input_range="0,1")
    _, x0, x1 = next(_pairs(photos, distorted))
    per_layer = scorer.distance(x0, x1, per_layer=True)["dists"]
    assert per_layer.shape == (len(x0), 6) and bool((per_layer > 0).all())
    torch.testing.assert_close(per_layer.sum(1), scorer.distance(x0, x1)["dists"])


def test_dists_weights_are_really_the_shipped_ones():
    """Other alpha/beta must give other distances: the parity test would catch a weights mix-up."""
    channels = [3, 64, 128, 256, 512, 512]
    shipped = pf.Scorer("dists_vgg16", weights="random", lin="dists", distances=("dists",))
    uniform = pf.Scorer("dists_vgg16", weights="random", distances=("dists",),
                        lin=[torch.full((2, c), 1 / (2 * sum(channels)), dtype=torch.float64) for c in channels])
    assert torch.allclose(sum(w.sum() for w in shipped.dists_weights), torch.tensor(1.0))
    x0, x1 = torch.rand(2, 3, 48, 48) * 2 - 1, torch.rand(2, 3, 48, 48) * 2 - 1
    assert not torch.allclose(shipped.distance(x0, x1)["dists"], uniform.distance(x0, x1)["dists"], rtol=1e-3)


def test_dists_weights_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="lin='dists'"):
        pf.Scorer("dists_vgg16", weights="random", distances=("dists",))
    wrong = tmp_path / "wrong.pt"
    torch.save({"alpha": torch.rand(1, 100, 1, 1), "beta": torch.rand(1, 100, 1, 1)}, wrong)
    with pytest.raises(pf.CheckpointError, match=r"1475 elements"):
        pf.Scorer("dists_vgg16", weights="random", lin=wrong, distances=("dists",))
    with pytest.raises(pf.CheckpointError, match="1152 elements.*fits trunk dists_vgg16"):  # another trunk's taps
        pf.Scorer("alexnet", weights="random", lin="dists", distances=("dists",))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match="pip install DISTS_pytorch"):
        pf.Scorer("dists_vgg16", weights="random", lin="dists", distances=("dists",))
