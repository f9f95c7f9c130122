"""Trunk pass sizes and CPU threads: how a Scorer splits a batch across trunk passes, and its num_threads."""

import pytest
import torch
from scorer_weights import dists_weights

import perceptual_fast as pf
from perceptual_fast.util import passes
from perceptual_fast.util.passes import CPU_PASS_PIXELS, images_per_pass, pass_sizes


@pytest.mark.parametrize("batch,limit,want", [
    (192, 64, [64, 64, 64]), (200, 64, [50, 50, 50, 50]), (7, 3, [3, 2, 2]), (5, None, [5]), (5, 5, [5]), (1, 1, [1]),
])
def test_pass_sizes_are_the_fewest_and_most_equal(batch, limit, want):
    assert pass_sizes(batch, limit) == want and sum(want) == batch


@pytest.mark.parametrize("keeps", [False, True], ids=["glibc defaults", "keeps freed memory"])
def test_auto_pass_size_follows_the_table_of_the_allocator_in_force(keeps, monkeypatch):
    monkeypatch.setattr(passes, "keeps_freed_memory", lambda: keeps)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert images_per_pass("auto", ("vgg16",), cpu, 64, 64) == 48  # measured fastest with either allocator
    assert images_per_pass("auto", ("vgg16",), cpu, 128, 128) == 12  # a quarter: the table is in pixels
    assert images_per_pass("auto", ("vgg16",), cpu, 2048, 2048) == 1  # never below one image
    # with glibc's defaults smaller passes fault fewer pages in; with memory kept, one pass is as fast
    assert images_per_pass("auto", ("squeezenet1_1",), cpu, 64, 64) == (None if keeps else 64)
    assert images_per_pass("auto", ("resnet",), cpu, 64, 64) == (None if keeps else 64)
    assert images_per_pass("auto", ("alexnet",), cpu, 64, 64) is None
    assert images_per_pass("auto", ("vgg16",), cuda, 64, 64) is None  # GPUs take the whole batch
    assert images_per_pass("auto", (), cpu, 64, 64) is None  # a trunk the table does not know
    assert images_per_pass(5, ("alexnet",), cuda, 64, 64) == 5 and images_per_pass(None, ("vgg16",), cpu, 64, 64) is None


class _Recorder(torch.nn.Module):
    """A trunk that records the batch and torch thread count of every pass."""

    def __init__(self, trunk):
        super().__init__()
        self.inner, self.tap_channels, self.calls = trunk, trunk.tap_channels, []
        self.trunk_config = trunk.trunk_config  # so the Scorer knows it as resnet18

    def forward_taps(self, x):
        self.calls.append((x.shape[0], torch.get_num_threads()))
        return self.inner.forward_taps(x)


@pytest.fixture
def triplets(photos, distorted):
    ref = photos(["astronaut", "coffee", "chelsea", "camera", "rocket"], (48, 40), seed=4)
    return {"ref": ref, "p0": distorted(ref, "noise", 0.1), "p1": distorted(ref, "blur", 1.0),
            "judge": torch.tensor([0.1, 0.4, 0.5, 0.8, 1.0])}


def _scorer(**kwargs):
    trunk = _Recorder(pf.load_trunk("resnet18", weights="random", seed=2, head=False, width=0.25))
    return pf.Scorer(trunk, distances=pf.DISTANCES[1:], lin=dists_weights(trunk.tap_channels), **kwargs)


def test_split_passes_give_the_whole_batch_values_and_gradients(triplets):
    """Pairs and triplets run in passes of whole pairs/triplets; features and targets in equal sub-batches."""
    whole, split = _scorer(pass_size=None), _scorer(pass_size=6)
    want, got = whole.score(triplets, per_layer=True), split.score(triplets, per_layer=True)
    assert [c[0] for c in whole.trunk.calls] == [15] and [c[0] for c in split.trunk.calls] == [6, 6, 3]  # 2, 2, 1 triplets
    for key in ("d0", "d1"):
        for d in want[key]:
            assert got[key][d].shape == (5, 4)
            torch.testing.assert_close(got[key][d], want[key][d], rtol=1e-5, atol=1e-7)
    grads = []
    for scorer in (whole, split):
        x = triplets["p0"].clone().requires_grad_(True)
        sum(v.sum() for v in scorer.distance(x, triplets["ref"]).values()).backward()
        grads.append(x.grad)
    assert [c[0] for c in split.trunk.calls[3:]] == [3, 3, 2, 2]  # 3 then 2 pairs: x with grad, ref without
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)
    assert grads[0].abs().sum() > 0
    images = torch.cat([triplets["ref"], triplets["p1"]])
    for got_tap, want_tap in zip(split.features(images), whole.features(images)):
        assert got_tap.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got_tap, want_tap, rtol=1e-5, atol=1e-6)
    assert [c[0] for c in split.trunk.calls[-2:]] == [5, 5]  # 10 images in two passes, taps concatenated


def test_auto_splits_by_the_table_on_cpu(triplets, monkeypatch):
    monkeypatch.setattr(passes, "keeps_freed_memory", lambda: False)
    monkeypatch.setitem(CPU_PASS_PIXELS["glibc defaults"], "resnet", 7 * 48 * 40)  # 7 images of 48x40: 2 triplets
    scorer = _scorer()
    assert scorer.images_per_pass(48, 40) == 7 and scorer.images_per_pass(96, 80) == 1
    scorer.score(triplets)
    assert [c[0] for c in scorer.trunk.calls] == [6, 6, 3]
    explicit = _scorer(pass_size=16)  # an explicit size overrides the table
    explicit.score(triplets)
    assert [c[0] for c in explicit.trunk.calls] == [15]


def test_num_threads_applies_during_calls_and_is_restored(triplets):
    from perceptual_fast import _C

    before = torch.get_num_threads()
    scorer = _scorer(num_threads=1, backend="cpp")
    scorer.score(triplets)
    scorer.distance(triplets["ref"], triplets["p0"])
    assert {c[1] for c in scorer.trunk.calls} == {1}  # the trunk ran with one thread
    assert _C.last_cpu_threads() == 1  # so did the fused kernel
    assert torch.get_num_threads() == before
    default = _scorer(backend="cpp")
    default.score(triplets)
    assert {c[1] for c in default.trunk.calls} == {before}


@pytest.mark.parametrize("kwargs,message", [
    ({"pass_size": 0}, r"pass_size must be 'auto', None \(whole batch\) or a positive number of images; got 0"),
    ({"pass_size": "big"}, r"pass_size must be .*got 'big'"),
    ({"num_threads": 0}, r"num_threads must be None \(torch's setting\) or a positive int; got 0"),
    ({"num_threads": 1.5}, r"num_threads must be .*got 1\.5"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _scorer(**kwargs)
