"""Every backend of the fused distance op present on this machine against the float64 reference.

cpp runs on the CPU; torch, triton and cuda on the GPU when there is one (``bash bench/gpu_check.sh``
runs this file there), else torch on the CPU and triton in its interpreter (small shapes); a
backend that cannot run here is skipped with its own reasons.
"""

import pytest
import torch
from fused_distance_cases import (
    BACKEND_NAMES,
    DTYPES,
    ODD_LAYERS,
    assert_matches_reference,
    device_of,
    layers_for,
    make_feats,
    make_weights,
    require,
)

import perceptual_fast as pf
from perceptual_fast.ops.fused_distance import BACKENDS, DistanceRequest, dispatch_plan
from perceptual_fast.ops.fused_distance import reference as D


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("count", [2, 3], ids=["pair", "triplet"])
@pytest.mark.parametrize("batch", [1, 3])
def test_every_backend_equals_the_float64_reference(backend, dtype, count, batch):
    layers = layers_for(backend)
    feats = make_feats(batch, layers, count, seed=10 * batch + count, dtype=dtype, device=device_of(backend))
    weights = make_weights(layers, device=device_of(backend))
    require(backend, feats, D.DISTANCES, weights)
    got = pf.fused_distance(*feats, distances=D.DISTANCES, **weights, backend=backend)
    assert_matches_reference(got, feats, D.DISTANCES, weights)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("distances", [("meanpool",), ("style",), ("lpips",), ("spatial", "style"), ("lpips", "meanpool")])
@pytest.mark.parametrize("count", [2, 3], ids=["pair", "triplet"])
def test_distance_subsets_give_the_reference_values_and_nothing_else(backend, distances, count):
    feats = make_feats(2, ODD_LAYERS, count, seed=5, device=device_of(backend))
    weights = make_weights(ODD_LAYERS, device=device_of(backend))
    require(backend, feats, distances, weights)
    assert_matches_reference(pf.fused_distance(*feats, distances=distances, **weights, backend=backend), feats, distances, weights)


def _layouts():
    """Maps as trunks and users hand them over: (name, maker from a contiguous [N, C, H, W] tensor)."""
    return {
        "batch-strided": lambda t: torch.stack([t, -t], dim=1).flatten(0, 1)[::2],  # batch stride 2*C*H*W
        "batch-sliced": lambda t: torch.cat([t, t, t])[1 : 1 + t.shape[0]],
        "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
        "expanded": lambda t: t[:1].expand(t.shape),  # batch stride 0
    }


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("layout", list(_layouts()))
def test_layouts_give_the_reference_values(backend, layout):
    # [N, C, 1, 1] and C = 1 taps: channels_last strides of size-1 dims differ from NCHW ones.
    layers = [(5, 1, 1), (1, 6, 7), (16, 3, 4)]
    feats = make_feats(3, layers, 3, seed=9, device=device_of(backend))
    feats = [[_layouts()[layout](t) for t in lst] for lst in feats]
    weights = make_weights(layers, device=device_of(backend))
    require(backend, feats, D.DISTANCES, weights)
    assert_matches_reference(pf.fused_distance(*feats, distances=D.DISTANCES, **weights, backend=backend), feats, D.DISTANCES, weights)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_identical_inputs_give_exact_zeros(backend, dtype):
    feats = make_feats(3, layers_for(backend), 3, seed=7, dtype=dtype, device=device_of(backend))
    same = [feats[0], [t.clone() for t in feats[0]], [t.clone() for t in feats[0]]]
    weights = make_weights(layers_for(backend), device=device_of(backend))
    require(backend, same, D.DISTANCES, weights)
    for terms in pf.fused_distance(*same, distances=D.DISTANCES, **weights, backend=backend):
        for name in D.DISTANCES:
            assert torch.equal(terms[name], torch.zeros_like(terms[name])), name


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_batches_beyond_one_launch_are_split(backend, monkeypatch):
    """More samples than grid axis 1 takes (65,535) run as several launches; forced to 2 here."""
    layers = ODD_LAYERS[:3]
    feats = make_feats(5, layers, 3, seed=11, device=device_of(backend))
    weights = make_weights(layers, device=device_of(backend))
    require(backend, feats, D.DISTANCES, weights)
    impl = BACKENDS[backend]
    monkeypatch.setattr(type(impl), "max_batch", 2)
    seen, compute = [], impl.compute
    monkeypatch.setattr(impl, "compute", lambda request: seen.append(request.feats[0][0].shape[0]) or compute(request))
    assert_matches_reference(pf.fused_distance(*feats, distances=D.DISTANCES, **weights, backend=backend), feats, D.DISTANCES, weights)
    assert seen == [2, 2, 1]


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_an_empty_batch_gives_empty_terms(backend):
    feats = [[t[:0] for t in lst] for lst in make_feats(3, ODD_LAYERS, 3, seed=12, device=device_of(backend))]
    weights = make_weights(ODD_LAYERS, device=device_of(backend))
    require(backend, feats, D.DISTANCES, weights)
    for terms in pf.fused_distance(*feats, distances=D.DISTANCES, **weights, backend=backend):
        assert all(terms[name].shape == (0, len(ODD_LAYERS)) for name in D.DISTANCES)


def test_auto_never_picks_the_interpreter_for_cpu_tensors():
    request = DistanceRequest(tuple(map(tuple, make_feats(2, ODD_LAYERS, 2, seed=6))), ("spatial",))
    assert dispatch_plan(request)[0] == "cpp"
