"""The fused op's backward on the backends that have one: ``cpp`` (kernels/cpu/fused_distance_backward.h),
``triton`` (the backward kernels of kernels/triton/fused_distance.py; in Triton's interpreter without
a GPU) and ``cuda`` (kernels/cuda/fused_distance_backward.cuh; on a GPU only) for lpips, spatial and
meanpool, autograd of the reference for style and dists. Input gradients against
autograd of the float64 reference, on odd (and, compiled, tile-sized) shapes, NCHW and channels_last,
pairs and triplets, with all-zero feature vectors, equal maps and only some maps requiring grad;
gradient buffers are NaN-filled before a kernel runs, so an element it fails to write fails."""

import pytest
import torch
from fused_distance_cases import ODD_LAYERS, device_of, layers_for, make_feats, make_weights, require

import perceptual_fast as pf
from perceptual_fast import _C
from perceptual_fast.ops.fused_distance import DistanceRequest, autograd, dispatch_plan
from perceptual_fast.ops.fused_distance import reference as D


@pytest.fixture(autouse=True)
def poisoned_gradients(monkeypatch):
    """Every gradient buffer starts as NaN: an element the kernel does not write fails the comparison."""
    monkeypatch.setattr(autograd, "gradient_buffer", lambda shape, device, fmt=torch.contiguous_format:
                        torch.full(tuple(shape), float("nan"), device=device).contiguous(memory_format=fmt))
GRAD_TOLERANCE = 2e-5
"""Float32 kernel against the float64 reference: max |error| over max |gradient|, per map; or, where
float32 itself cannot do better (a C = 1 map: its unit vector is constant, so its gradient is a
difference of two nearly equal terms), within 4x the float32 reference's own error."""


def _layout(t, channels_last):
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _gradients(feats, distances, channel_weights, weights, needs, backend, dtype=torch.float32):
    """d(sum of terms x weights)/d(maps that need it), from ``backend`` (or, for None, autograd of the
    reference) in ``dtype``; channel_weights: the op's lin / dists_weights keywords."""
    inputs = [[t.detach().to(dtype).requires_grad_(needs[k][i]) for i, t in enumerate(lst)] for k, lst in enumerate(feats)]
    channel_weights = {k: [w.to(dtype) for w in ws] for k, ws in channel_weights.items()}
    if backend is None:
        out = [D.layer_terms(inputs[0], other, distances, **channel_weights) for other in inputs[1:]]
    else:
        out = pf.fused_distance(*inputs, distances=distances, **channel_weights, backend=backend)
        out = [out] if len(inputs) == 2 else list(out)
    total = sum((out[q][d] * weights[q][d].to(dtype)).sum() for q in range(len(out)) for d in distances)
    wanted = [t for lst in inputs for t in lst if t.requires_grad]
    return total, torch.autograd.grad(total, wanted)


def _check(feats, distances, needs=None, lin_seed=0, backend="cpp"):
    layers = [tuple(t.shape[1:]) for t in feats[0]]
    channel_weights = make_weights(layers, lin_seed, device=feats[0][0].device)
    n = feats[0][0].shape[0]
    g = torch.Generator().manual_seed(5)
    weights = [{d: torch.rand(n, len(layers), generator=g) + 0.5 for d in distances} for _ in feats[1:]]
    needs = needs or [[True] * len(layers) for _ in feats]
    _, got = _gradients(feats, distances, channel_weights, weights, needs, backend)
    _, want = _gradients(feats, distances, channel_weights, weights, needs, None, torch.float64)
    _, float32 = _gradients(feats, distances, channel_weights, weights, needs, None, torch.float32)
    assert len(got) == len(want) == sum(map(sum, needs))
    for i, (a, b, f) in enumerate(zip(got, want, float32)):
        assert a.dtype == torch.float32 and a.shape == b.shape and torch.isfinite(a).all(), i
        a, b, f = a.cpu(), b.cpu(), f.cpu()
        error, reference_error = float((a.double() - b).abs().max()), float((f.double() - b).abs().max())
        allowed = max(GRAD_TOLERANCE * float(b.abs().max()), 4 * reference_error) + 1e-12
        assert error <= allowed, (i, error, allowed)


# (triton and cuda read NCHW samples and copy channels_last maps to NCHW first: their channels_last case is NCHW)
@pytest.mark.parametrize("backend, channels_last", [("cpp", False), ("cpp", True), ("triton", False), ("cuda", False)],
                         ids=["cpp-nchw", "cpp-channels_last", "triton-nchw", "cuda-nchw"])
@pytest.mark.parametrize("count", [2, 3], ids=["pair", "triplet"])
@pytest.mark.parametrize("distances", [("lpips",), ("spatial",), ("meanpool",), ("style",), ("dists",), D.DISTANCES],
                         ids=["lpips", "spatial", "meanpool", "style", "dists", "all"])
def test_backward_matches_the_float64_reference(backend, channels_last, distances, count):
    feats = make_feats(3, layers_for(backend), count, seed=30 + count, device=device_of(backend))  # a has zero vectors
    feats = [[_layout(t, channels_last) for t in lst] for lst in feats]
    if count == 3:
        feats[2][1] = feats[0][1].clone()  # equal maps: a zero term, whose gradient must be exactly finite
    require(backend, feats, distances)
    _check(feats, distances, backend=backend)


@pytest.mark.parametrize("backend", ["cpp", "triton", "cuda"])
def test_backward_gives_gradients_only_where_asked(backend):
    feats = make_feats(2, ODD_LAYERS, 3, seed=41, device=device_of(backend))
    require(backend, feats)
    needs = [[False] * len(ODD_LAYERS), [True, False, True, False, True, False], [False] * len(ODD_LAYERS)]
    needs[2][3] = True
    _check(feats, D.DISTANCES, needs, backend=backend)


@pytest.mark.parametrize("backend", ["cpp", "triton", "cuda"])
def test_gradients_are_zero_at_equal_inputs_and_finite_at_zero_vectors(backend):
    feats = make_feats(2, ODD_LAYERS, 2, seed=43, device=device_of(backend))
    require(backend, feats)
    feats[1] = [t.clone() for t in feats[0]]
    feats[0][2][1] = 0.0  # a whole all-zero sample
    feats[1][2][1] = 0.0
    inputs = [[t.clone().requires_grad_() for t in lst] for lst in feats]
    weights = make_weights(ODD_LAYERS, device=device_of(backend))
    out = pf.fused_distance(*inputs, distances=("lpips", "spatial", "meanpool", "dists"), **weights, backend=backend)
    sum(v.sum() for v in out.values()).backward()
    for lst in inputs:
        for t in lst:
            assert torch.equal(t.grad, torch.zeros_like(t.grad))


def test_auto_takes_cpp_with_gradients_where_its_backward_can():
    feats = make_feats(1, ODD_LAYERS[:2], 2, seed=44)
    grad = [[t.clone().requires_grad_() for t in lst] for lst in feats]
    assert dispatch_plan(DistanceRequest(tuple(map(tuple, grad)), ("spatial", "style")))[0] == "cpp"
    bf16 = [[t.bfloat16().requires_grad_() for t in lst] for lst in feats]
    name, reasons = dispatch_plan(DistanceRequest(tuple(map(tuple, bf16)), ("spatial",)))
    assert name == "torch" and any("backward takes features of one dtype among float32" in r for r in reasons["cpp"])
    lin = [w.requires_grad_() for w in make_weights(ODD_LAYERS[:2])["lin"]]
    name, reasons = dispatch_plan(DistanceRequest(tuple(map(tuple, grad)), ("lpips",), lin))
    assert name == "torch" and any("lpips or dists weights require grad" in r for r in reasons["cpp"])
    out = pf.fused_distance(*grad, distances=("spatial",), backend="cpp")["spatial"].sum()
    with pytest.raises(RuntimeError, match="differentiable once; for second derivatives .* backend='torch'"):
        torch.autograd.grad(out, grad[0][0], create_graph=True)


def test_backward_kernel_argument_errors_are_clear():
    a = torch.rand(1, 2, 2, 2)
    row = (a.data_ptr(), a.data_ptr(), 0, 8, 8, 0, 2, 4, 0, 0, False)
    upstream = torch.zeros(5, 1, 1, 1)
    spatial, style, dists = (1 << _C.DISTANCE_SLOTS.index(name) for name in ("spatial", "style", "dists"))
    grad = torch.empty_like(a)
    for caller_differentiated in (style, dists):
        with pytest.raises(ValueError, match="style and dists are differentiated by the caller"):
            _C.fused_distance_backward_cpu([row], 1, 2, caller_differentiated, "float32", upstream.data_ptr(),
                                           [(grad.data_ptr(), 0, 0, 8, 0, 0)])
    with pytest.raises(ValueError, match="one gradient row per layer: 0 for 1 layers"):
        _C.fused_distance_backward_cpu([row], 1, 2, spatial, "float32", upstream.data_ptr(), [])
    with pytest.raises(ValueError, match="gradient 0 is misaligned or has a negative batch stride"):
        _C.fused_distance_backward_cpu([row], 1, 2, spatial, "float32", upstream.data_ptr(), [(grad.data_ptr(), 0, 0, -8, 0, 0)])
