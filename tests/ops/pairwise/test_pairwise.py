"""pairwise: every distance between two image sets from one trunk pass per image, against the float64
reference applied pair by pair to the same taps."""

import pytest
import torch
from scorer_weights import dists_weights

import perceptual_fast as pf
from perceptual_fast.ops.fused_distance import reference as R
from perceptual_fast.ops.pairwise import REFINE, concat, embed, pairwise_terms, style_position_form

# (trunk, config, size): a trunk whose style layers use the Gram form and the position form
# (alexnet at 64 px: 15x15 and 7x7 taps against 3x3 ones), and a ViT with patch taps.
CASES = [("alexnet", {}, 64), ("resnet18", {"width": 0.25}, 48), ("vit_t_16", {"depth": 2, "taps": "patch"}, 48)]


@pytest.fixture
def sets(photos, distorted):
    """x: 5 photos; y: 4 images, among them x[2] slightly noised (near-identical), x[0] at 1e-5, and x[4] itself."""
    def make(size):
        x = photos(["astronaut", "coffee", "chelsea", "camera", "rocket"], (size, size), seed=3)
        g = torch.Generator().manual_seed(size)
        noise = torch.randn((2, *x.shape[1:]), generator=g)
        y = torch.stack([distorted(x[1:2], "blur", 1.0)[0], (x[2] + 1e-3 * noise[0]).clamp(-1, 1),
                         x[4], (x[0] + 1e-5 * noise[1]).clamp(-1, 1)])
        return x, y
    return make


def _scorer(name, config, **kwargs):
    """A Scorer of every distance: random lpips weights [C_l] and dists alpha/beta [2, C_l] (summing to 1)."""
    channels = pf.load_trunk(name, weights="random", head=False, **config).tap_channels
    lin = {"lpips": [torch.rand(c) for c in channels], "dists": dists_weights(channels)}
    return pf.Scorer(name, weights="random", seed=1, trunk_config=config, lin=lin, distances=pf.DISTANCES, **kwargs)


@pytest.mark.parametrize("name,config,size", CASES, ids=[c[0] for c in CASES])
def test_pairwise_equals_the_float64_reference_pair_by_pair(name, config, size, sets):
    scorer = _scorer(name, config)
    x, y = sets(size)
    got = scorer.pairwise(x, y, per_layer=True)
    both = scorer.features(torch.cat([x, y]))  # the trunk pass pairwise makes (taps round with the batch)
    fx, fy = [t[:len(x)] for t in both], [t[len(x):] for t in both]
    lin, dists = [v.double() for v in scorer.lin], [w.double() for w in scorer.dists_weights]
    for i in range(len(x)):
        for j in range(len(y)):
            want = R.layer_terms([t[i:i + 1].double() for t in fx], [t[j:j + 1].double() for t in fy], pf.DISTANCES, lin,
                                 dists)
            for d in pf.DISTANCES:
                assert got[d].dtype == torch.float64 and got[d].shape == (5, 4, len(fx))
                torch.testing.assert_close(got[d][i, j], want[d][0], rtol=1e-5, atol=0, msg=f"{d} [{i}, {j}]")
    for d in pf.DISTANCES:
        assert (got[d][4, 2] == 0).all()  # the same image: exactly 0, as the fused op gives
        assert (got[d][0, 3] > 0).all()  # 1e-5 apart: not rounded away
    summed = scorer.pairwise(x, y)
    for d in pf.DISTANCES:
        torch.testing.assert_close(summed[d], got[d].sum(-1), rtol=1e-12, atol=0)
    # what the Scorer's own distance gives for a pair (the float32 fused op; near-identical pairs are
    # left out: there the float32 op has fewer correct digits than this float64 path)
    for i in (0, 1, 3):
        direct = scorer.distance(x[i:i + 1], y[:1])
        for d in pf.DISTANCES:
            torch.testing.assert_close(summed[d][i, 0].float(), direct[d][0], rtol=1e-4, atol=1e-7)


def test_a_set_against_itself_is_symmetric_with_an_exact_zero_diagonal(sets):
    scorer = _scorer("alexnet", {})
    x, _ = sets(64)
    got = scorer.pairwise(x)
    for d in pf.DISTANCES:
        assert (got[d].diagonal() == 0).all() and (got[d] > 0).sum() == 20
        assert torch.equal(got[d], got[d].T)  # exactly: the upper tiles mirrored
    for block in (1, 2, 3):
        for d, v in scorer.pairwise(x, block=block).items():
            assert torch.equal(v, v.T)
            torch.testing.assert_close(v, got[d], rtol=1e-9, atol=0)


def test_blocks_equal_the_whole_and_embeddings_are_reusable(sets):
    scorer = _scorer("resnet18", {"width": 0.25}, pass_size=2)  # trunk passes of 2 images too
    x, y = sets(48)
    ex, ey = scorer.embed(x), scorer.embed(y)
    whole = scorer.pairwise(ex, ey, per_layer=True, block=256)
    direct = scorer.pairwise(x, y, per_layer=True)  # one trunk pass over both sets: the same up to the trunk's rounding
    for d in pf.DISTANCES:
        torch.testing.assert_close(direct[d], whole[d], rtol=1e-4, atol=1e-9)
    for block in (1, 2, 3):
        tiled = scorer.pairwise(ex, ey, per_layer=True, block=block)
        for d in pf.DISTANCES:
            # the products block differently: equal to the expansion's rounding, ~1e-9 of the term and at
            # most ~1e-7 just above REFINE (measured 1.7e-9 for a style term of a pair 1e-3 apart)
            torch.testing.assert_close(tiled[d], whole[d], rtol=1e-7, atol=0)


def test_style_form_follows_the_cheaper_product():
    assert style_position_form(384, 9) and style_position_form(768, 1)  # alexnet's 3x3 taps at 64 px, ViT CLS taps
    assert not style_position_form(192, 49) and not style_position_form(64, 225)  # its 7x7 and 15x15 taps
    taps = [torch.rand(2, 64, 15, 15), torch.rand(2, 384, 3, 3)]
    e = embed(taps, ("style",))
    assert e.layers[0].gram is not None and e.layers[0].positions is None
    assert e.layers[1].positions is not None and e.layers[1].gram is None
    # both forms against the reference, on maps that differ by 1e-6: the refined pairs
    other = [t + 1e-6 * torch.rand_like(t) for t in taps]
    got = pairwise_terms(e, embed(other, ("style",)))["style"]
    for i in range(2):
        for j in range(2):
            want = R.layer_terms([t[i:i + 1].double() for t in taps], [t[j:j + 1].double() for t in other], ("style",), None)
            torch.testing.assert_close(got[i, j], want["style"][0], rtol=1e-5, atol=0)
    assert 0 < REFINE < 1e-4


def test_bad_requests_are_clear_errors(sets):
    scorer = _scorer("alexnet", {})
    x, _ = sets(64)
    small = torch.nn.functional.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False)
    with pytest.raises(ValueError, match=r"the lpips distance compares maps position by position: both image sets need"):
        scorer.pairwise(x, small)
    sizes = pf.Scorer("alexnet", weights="random", distances=("meanpool", "style"))  # any sizes for these two
    got = sizes.pairwise(x, small, per_layer=True)
    assert got["style"].shape == (5, 5, 5)
    fx, fs = sizes.features(x[1:2]), sizes.features(small[3:4])  # 64 px (Gram and position forms) vs 48 px
    for layer, (a, b) in enumerate(zip(fx, fs)):
        a, b, c = a.double(), b.double(), a.shape[1]
        style = ((R.gram(a) - R.gram(b)) ** 2).sum() / (c * c)
        ma, mb = a.mean((2, 3)), b.mean((2, 3))
        meanpool = ((ma / (ma.norm() + R.NORM_EPS) - mb / (mb.norm() + R.NORM_EPS)) ** 2).sum() / c
        torch.testing.assert_close(got["style"][1, 3, layer], style, rtol=1e-5, atol=0)
        torch.testing.assert_close(got["meanpool"][1, 3, layer], meanpool, rtol=1e-5, atol=0)
    other = pf.Scorer("alexnet", weights="random", distances=("spatial",))
    with pytest.raises(ValueError, match=r"pairwise needs two embeddings of the same Scorer"):
        scorer.pairwise(scorer.embed(x), other.embed(x))


def test_review_cases_sets_of_mixed_dtypes_blocks_lin_and_threads(sets):
    """uint8 and float sets compare as separate passes would; bad blocks, other lin weights, a set of one
    image, mixed sizes in concat: clear errors; num_threads covers the products."""
    scorer = _scorer("alexnet", {})
    x, y = sets(64)
    y8 = ((y + 1) * 127.5).round().to(torch.uint8)
    got, want = scorer.pairwise(x, y8), scorer.pairwise(scorer.embed(x), scorer.embed(y8))
    for d in pf.DISTANCES:
        torch.testing.assert_close(got[d], want[d], rtol=1e-4, atol=1e-9)
    for block in (0, -1, 2.5):
        with pytest.raises(ValueError, match=r"block must be a positive number of images"):
            scorer.pairwise(x, block=block)
    for changed in ({"lpips": [2 * v for v in scorer.lin], "dists": scorer.dists_weights},
                    {"lpips": scorer.lin, "dists": [w.flip(0) for w in scorer.dists_weights]}):
        other = pf.Scorer("alexnet", weights="random", seed=1, lin=changed, distances=pf.DISTANCES)
        with pytest.raises(ValueError, match=r"same distances, taps and lin weights"):
            scorer.pairwise(scorer.embed(x), other.embed(x))
    one = scorer.pairwise(x[:1])
    assert all(v.shape == (1, 1) and v.item() == 0 for v in one.values())
    small = torch.nn.functional.interpolate(x[:2], size=(48, 48), mode="bilinear", align_corners=False)
    with pytest.raises(ValueError, match=r"concat joins embeddings of one image size"):
        concat([scorer.embed(x[:2]), scorer.embed(small)])
    with pytest.raises(ValueError, match=r"images must be a torch.Tensor"):
        scorer.embed(x.numpy())
    threads = pf.Scorer("alexnet", weights="random", distances=("spatial",), num_threads=1)
    seen = []
    original = threads.trunk.forward_taps
    threads.trunk.forward_taps = lambda t: seen.append(torch.get_num_threads()) or original(t)
    import perceptual_fast.ops.pairwise as ops_pairwise
    real = ops_pairwise._layer_block
    try:
        ops_pairwise._layer_block = lambda *a: seen.append(torch.get_num_threads()) or real(*a)
        threads.pairwise(x)
    finally:
        ops_pairwise._layer_block = real
    assert set(seen) == {1} and len(seen) > 1  # the trunk and the products ran under num_threads
