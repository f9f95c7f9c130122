"""Scorer and score(): the triplet path, per-layer terms, precision, gradients, score's Scorer cache."""

import inspect
import os

import pytest
import torch
from scorer_weights import lpips_and_dists_weights

import perceptual_fast as pf
from perceptual_fast import scorer as scorer_module
from perceptual_fast.ops.fused_distance import reference as D
from perceptual_fast.preprocess import lpips_scaling


@pytest.fixture(scope="module")
def scorer():
    return pf.Scorer("squeezenet1_1", weights="random", seed=1, lin=lpips_and_dists_weights("squeezenet1_1"), distances=pf.DISTANCES)


@pytest.fixture
def triplet(photos, distorted):
    ref = photos(("astronaut", "coffee", "chelsea"), (64, 72), seed=2)
    return {
        "ref": ref,
        "p0": distorted(ref, "noise", 0.15, seed=1),
        "p1": distorted(ref, "blur", 1, seed=2),
        "judge": torch.tensor([0.0, 0.6, 1.0]),
    }


def test_triplet_runs_the_trunk_once_on_3n_images(scorer, triplet):
    seen = []
    original = scorer.trunk.forward_taps
    scorer.trunk.forward_taps = lambda x: seen.append(x.shape[0]) or original(x)
    try:
        scorer.score(triplet)
    finally:
        del scorer.trunk.forward_taps
    assert seen == [9]  # 3 images per triplet in one pass, not 4


def test_score_equals_pairwise_distances_and_2afc(scorer, triplet):
    out = scorer.score(triplet)
    d0 = scorer.distance(triplet["ref"], triplet["p0"])
    d1 = scorer.distance(triplet["ref"], triplet["p1"])
    for name in pf.DISTANCES:
        torch.testing.assert_close(out["d0"][name], d0[name], rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(out["d1"][name], d1[name], rtol=1e-5, atol=1e-8)
        assert (out["d0"][name] > 0).all() and (out["d1"][name] > 0).all()
        h = triplet["judge"].double()
        want = (d0[name] < d1[name]).double() * (1 - h) + (d1[name] < d0[name]).double() * h + (d0[name] == d1[name]).double() * 0.5
        torch.testing.assert_close(out["2afc"][name], want)
        assert out["2afc_mean"][name] == pytest.approx(float(want.mean()))


def test_per_layer_terms_sum_to_the_distance(scorer, triplet):
    layers = scorer.score(triplet, per_layer=True)
    total = scorer.score(triplet)
    for name in pf.DISTANCES:
        assert layers["d0"][name].shape == (3, 7)
        torch.testing.assert_close(layers["d0"][name].sum(1), total["d0"][name])
    assert "2afc" not in scorer.score({k: v for k, v in triplet.items() if k != "judge"})


def test_one_shot_score_equals_the_scorer(triplet):
    kwargs = dict(trunk="alexnet", weights="random", seed=5, distances=("spatial", "meanpool"))
    one = pf.score(triplet, **kwargs)
    two = pf.Scorer(**kwargs).score(triplet)
    for name in ("spatial", "meanpool"):
        assert torch.equal(one["d0"][name], two["d0"][name])
    assert one["2afc_mean"] == two["2afc_mean"]


def test_fp64_agrees_with_fp32(triplet):
    kw = dict(trunk="alexnet", weights="random", lin=lpips_and_dists_weights("alexnet"), distances=pf.DISTANCES)
    d32 = pf.Scorer(precision="fp32", **kw).score(triplet)
    d64 = pf.Scorer(precision="fp64", **kw).score(triplet)
    for name in pf.DISTANCES:
        assert d64["d0"][name].dtype == torch.float64 and d32["d0"][name].dtype == torch.float32
        torch.testing.assert_close(d32["d0"][name].double(), d64["d0"][name], rtol=1e-4, atol=1e-9)


def test_distance_is_differentiable_as_a_loss(triplet):
    scorer = pf.Scorer("alexnet", weights="random", lin=lpips_and_dists_weights("alexnet"), distances=pf.DISTANCES)
    x = triplet["p0"].clone().requires_grad_()
    d = scorer.distance(triplet["ref"], x)
    # The gradient path (trunk under autograd, a differentiable backend) computes the same distances
    # as the no-grad one (the fused kernel on the CPU), up to float32 rounding.
    with torch.no_grad():
        plain = scorer.distance(triplet["ref"], triplet["p0"])
    for name in pf.DISTANCES:
        assert d[name].requires_grad and not plain[name].requires_grad
        torch.testing.assert_close(d[name].detach(), plain[name], rtol=1e-5, atol=1e-9, msg=name)
    sum(v.sum() for v in d.values()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Identical images: distance 0, a minimum, so the gradient is exactly 0 (every term is a square
    # of an exactly-zero difference; no NaN from the all-zero feature vectors ReLU taps have).
    y = triplet["ref"].clone().requires_grad_()
    d = scorer.distance(triplet["ref"], y)
    assert all(float(v.detach().abs().max()) == 0 for v in d.values())
    sum(v.sum() for v in d.values()).backward()
    assert torch.isfinite(y.grad).all() and not y.grad.any()


def test_a_custom_trunk_module_is_accepted():
    """Any module with forward_taps: the Scorer's per-layer terms are the reference's on the taps that
    module gives for the LPIPS-scaled images (computed here independently, in float64)."""

    class Tiny(torch.nn.Module):
        def forward_taps(self, x):
            a = torch.relu(torch.nn.functional.avg_pool2d(x, 2))
            return [a, torch.relu(torch.nn.functional.avg_pool2d(a, 2))]

    scorer = pf.Scorer(Tiny(), distances=("spatial", "meanpool", "style"))
    g = torch.Generator().manual_seed(3)
    x0, x1 = (torch.rand(2, 3, 16, 16, generator=g) * 2 - 1 for _ in range(2))
    d = scorer.distance(x0, x1, per_layer=True)
    taps0, taps1 = (Tiny().forward_taps(lpips_scaling(x.double())) for x in (x0, x1))
    want = D.layer_terms(taps0, taps1, scorer.distances)
    for name in scorer.distances:
        assert d[name].shape == (2, 2) and d[name].dtype == torch.float32
        assert bool((want[name] > 0).all()), name
        torch.testing.assert_close(d[name].double(), want[name], rtol=1e-5, atol=1e-9, msg=name)


def test_bf16_taps_reach_the_kernel_and_match_the_widened_reference(triplet):
    kw = dict(trunk="alexnet", weights="random", lin=lpips_and_dists_weights("alexnet"), distances=pf.DISTANCES, precision="bf16")
    cpp = pf.Scorer(backend="cpp", **kw)
    taps = cpp.features(triplet["ref"])
    assert all(t.dtype == torch.bfloat16 for t in taps)  # no float32 copy on the way to the kernel
    got, want = cpp.score(triplet), pf.Scorer(backend="torch", **kw).score(triplet)
    for name in pf.DISTANCES:
        assert got["d0"][name].dtype == torch.float32
        torch.testing.assert_close(got["d0"][name], want["d0"][name], rtol=1e-5, atol=1e-9)


def test_memory_format_auto_runs_channels_last_on_cpu_with_the_same_results(triplet):
    kw = dict(trunk="vgg16", weights="random", lin=lpips_and_dists_weights("vgg16"), distances=pf.DISTANCES)
    auto, nchw = pf.Scorer(**kw), pf.Scorer(memory_format="contiguous", **kw)
    taps = auto.features(triplet["ref"])
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in taps if t.shape[-1] > 1)
    assert all(t.is_contiguous() for t in nchw.features(triplet["ref"]))
    a, b = auto.score(triplet), nchw.score(triplet)
    for name in pf.DISTANCES:
        torch.testing.assert_close(a["d0"][name], b["d0"][name], rtol=1e-4, atol=1e-8)
    with pytest.raises(ValueError, match="memory_format 'nhwc' is not one of auto, channels_last, contiguous"):
        pf.Scorer(memory_format="nhwc", **kw)


# pf.score's Scorer cache: hits, misses, changed files, the LRU bound, exact results.

SMALL = dict(trunk="alexnet", weights="random", distances=("spatial", "meanpool"))


@pytest.fixture
def small_triplet(photos, distorted):
    ref = photos(("astronaut", "coffee"), (64, 64), seed=3)
    return {"ref": ref, "p0": distorted(ref, "noise", 0.2, seed=4), "p1": distorted(ref, "shift", 0.1), "judge": torch.tensor([0.2, 0.9])}


@pytest.fixture
def empty_cache():
    pf.score.cache_clear()
    yield
    pf.score.cache_clear()


def _assert_same_results(a, b):
    assert a.keys() == b.keys()
    for part in ("d0", "d1", "2afc"):
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    assert a["2afc_mean"] == b["2afc_mean"]


def test_score_key_covers_every_scorer_argument():
    # A new Scorer argument must be keyed too (or the cache would return a Scorer built without it).
    # (The key binds the arguments to Scorer's own signature, defaults filled in: one entry per parameter.)
    assert [name for name, _ in scorer_module._score_key()] == list(inspect.signature(pf.Scorer).parameters)


def test_score_reuses_one_scorer_and_equals_a_fresh_one(small_triplet, empty_cache, monkeypatch):
    built = []
    monkeypatch.setattr(scorer_module, "Scorer", type("Counted", (pf.Scorer,), {
        "__init__": lambda self, *a, **k: built.append(k) or pf.Scorer.__init__(self, *a, **k)}))
    first = pf.score(small_triplet, **SMALL)
    again = pf.score(small_triplet, **SMALL)
    assert len(built) == 1 and pf.score.cache_info()[:2] == (1, 1)
    assert scorer_module._score_scorer(**SMALL) is scorer_module._score_scorer(**SMALL)
    want = pf.Scorer(**SMALL).score(small_triplet)
    _assert_same_results(first, want)
    _assert_same_results(again, want)
    layers = pf.score(small_triplet, per_layer=True, **SMALL)  # per_layer is per call, not a key
    assert len(built) == 1 and layers["d0"]["spatial"].shape == (2, 5)


@pytest.mark.parametrize("change", [
    dict(seed=1), dict(distances=("spatial",)), dict(precision="fp64"), dict(backend="torch"),
    dict(input_range="0,1"), dict(memory_format="contiguous"), dict(trunk_config={"dropout": 0.0}), dict(lin="lpips"),
])
def test_score_misses_for_a_different_argument(change, empty_cache):
    base = scorer_module._score_scorer(**SMALL)
    other = scorer_module._score_scorer(**{**SMALL, **change})
    assert other is not base and pf.score.cache_info().currsize == 2
    assert scorer_module._score_scorer(**SMALL) is base


def test_score_seed_is_not_a_key_without_random_weights(tmp_path, empty_cache):
    path = tmp_path / "alex.safetensors"
    pf.save_trunk(pf.load_trunk("alexnet", weights="random", head=False), path)
    kw = dict(trunk="alexnet", weights=path)
    assert scorer_module._score_scorer(seed=1, **kw) is scorer_module._score_scorer(seed=2, **kw)


def test_score_misses_when_the_weights_file_changes(small_triplet, tmp_path, empty_cache):
    path = tmp_path / "alex.safetensors"
    pf.save_trunk(pf.load_trunk("alexnet", weights="random", seed=0, head=False), path)
    kw = dict(SMALL, weights=str(path))
    before = pf.score(small_triplet, **kw)
    held = scorer_module._score_scorer(**kw)
    mtime = path.stat().st_mtime_ns
    pf.save_trunk(pf.load_trunk("alexnet", weights="random", seed=1, head=False), path)
    os.utime(path, ns=(mtime + 1_000_000_000, mtime + 1_000_000_000))  # same size: only mtime_ns tells
    after = pf.score(small_triplet, **kw)
    assert scorer_module._score_scorer(**kw) is not held and pf.score.cache_info().misses == 2
    assert not torch.equal(before["d0"]["spatial"], after["d0"]["spatial"])
    _assert_same_results(after, pf.Scorer(**kw).score(small_triplet))
    # The same file through another spelling of its path is the same key.
    assert scorer_module._score_scorer(**dict(kw, weights=tmp_path / "." / "alex.safetensors")) is scorer_module._score_scorer(**kw)


def test_score_cache_evicts_the_least_recently_used(empty_cache):
    bound = scorer_module.SCORE_CACHE_SIZE
    scorers = [scorer_module._score_scorer(**SMALL, seed=s) for s in range(bound)]
    assert scorer_module._score_scorer(**SMALL, seed=0) is scorers[0]  # seed 0 is now the newest
    scorer_module._score_scorer(**SMALL, seed=bound)  # evicts seed 1, the oldest
    assert pf.score.cache_info().currsize == bound
    assert scorer_module._score_scorer(**SMALL, seed=0) is scorers[0]
    assert scorer_module._score_scorer(**SMALL, seed=1) is not scorers[1]
    pf.score.cache_clear()
    assert pf.score.cache_info() == (0, 0, bound, 0)
    assert pf.score.cache_clear is scorer_module.clear_score_cache


def test_score_does_not_cache_calls_given_a_module_or_lin_tensors(small_triplet, empty_cache):
    trunk = pf.load_trunk("alexnet", weights="random", head=False)
    first = scorer_module._score_scorer(trunk=trunk)
    assert scorer_module._score_scorer(trunk=trunk) is not first
    lin = [torch.ones(c) for c in first.trunk.tap_channels]
    pf.score(small_triplet, trunk="alexnet", weights="random", lin=lin, distances=("lpips",))
    assert pf.score.cache_info().currsize == 0


def test_cached_score_is_a_loss_without_state_between_calls(small_triplet, empty_cache):
    ref = small_triplet["ref"]
    p0 = small_triplet["p0"].clone().requires_grad_(True)
    out = pf.score({"ref": ref, "p0": p0, "p1": small_triplet["p1"]}, **SMALL)
    out["d0"]["spatial"].sum().backward()
    assert p0.grad is not None and p0.grad.abs().sum() > 0
    held = scorer_module._score_scorer(**SMALL)
    assert not held.trunk.training and not any(p.requires_grad or p.grad is not None for p in held.trunk.parameters())
    _assert_same_results(pf.score(small_triplet, **SMALL), pf.Scorer(**SMALL).score(small_triplet))


def test_score_cache_gives_threads_one_scorer(empty_cache):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: scorer_module._score_scorer(**SMALL), range(8)))
    assert all(s is got[0] for s in got) and pf.score.cache_info().currsize == 1
