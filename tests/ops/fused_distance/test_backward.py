"""The fused op's backward on the ``cpp`` backend (kernels/cpu/fused_distance_backward.h for lpips,
spatial and meanpool; autograd of the reference for style): input gradients against autograd of the
float64 reference, on odd and tile-sized shapes, NCHW and channels_last, pairs and triplets, with
all-zero feature vectors, equal maps and only some maps requiring grad; gradient buffers are
NaN-filled before the kernel runs, so an element it fails to write fails the comparison."""

import pytest
import torch
from fused_distance_cases import LARGE_LAYERS, ODD_LAYERS, make_feats, make_lin

import perceptual_fast as pf
from perceptual_fast import _C
from perceptual_fast.ops.fused_distance import DistanceRequest, cpu, dispatch_plan
from perceptual_fast.ops.fused_distance import reference as D

LAYERS = ODD_LAYERS + LARGE_LAYERS


@pytest.fixture(autouse=True)
def poisoned_gradients(monkeypatch):
    """Every gradient buffer starts as NaN: an element the kernel does not write fails the comparison."""
    monkeypatch.setattr(cpu, "gradient_buffer", lambda shape, fmt: torch.full(shape, float("nan")).contiguous(memory_format=fmt))
GRAD_TOLERANCE = 2e-5
"""Float32 kernel against the float64 reference: max |error| over max |gradient|, per map; or, where
float32 itself cannot do better (a C = 1 map: its unit vector is constant, so its gradient is a
difference of two nearly equal terms), within 4x the float32 reference's own error."""


def _layout(t, channels_last):
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _gradients(feats, distances, lin, weights, needs, backend, dtype=torch.float32):
    """d(sum of terms x weights)/d(maps that need it), from ``backend`` (or, for None, autograd of the
    reference) in ``dtype``."""
    inputs = [[t.detach().to(dtype).requires_grad_(needs[k][i]) for i, t in enumerate(lst)] for k, lst in enumerate(feats)]
    lin = None if lin is None else [w.to(dtype) for w in lin]
    if backend is None:
        out = [D.layer_terms(inputs[0], other, distances, lin) for other in inputs[1:]]
    else:
        out = pf.fused_distance(*inputs, distances=distances, lin=lin, backend=backend)
        out = [out] if len(inputs) == 2 else list(out)
    total = sum((out[q][d] * weights[q][d].to(dtype)).sum() for q in range(len(out)) for d in distances)
    wanted = [t for lst in inputs for t in lst if t.requires_grad]
    return total, torch.autograd.grad(total, wanted)


def _check(feats, distances, needs=None, lin_seed=0):
    layers = [tuple(t.shape[1:]) for t in feats[0]]
    lin = make_lin(layers, lin_seed) if "lpips" in distances else None
    n = feats[0][0].shape[0]
    g = torch.Generator().manual_seed(5)
    weights = [{d: torch.rand(n, len(layers), generator=g) + 0.5 for d in distances} for _ in feats[1:]]
    needs = needs or [[True] * len(layers) for _ in feats]
    _, got = _gradients(feats, distances, lin, weights, needs, "cpp")
    _, want = _gradients(feats, distances, lin, weights, needs, None, torch.float64)
    _, float32 = _gradients(feats, distances, lin, weights, needs, None, torch.float32)
    assert len(got) == len(want) == sum(map(sum, needs))
    for i, (a, b, f) in enumerate(zip(got, want, float32)):
        assert a.dtype == torch.float32 and a.shape == b.shape and torch.isfinite(a).all(), i
        error, reference_error = float((a.double() - b).abs().max()), float((f.double() - b).abs().max())
        allowed = max(GRAD_TOLERANCE * float(b.abs().max()), 4 * reference_error) + 1e-12
        assert error <= allowed, (i, error, allowed)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("count", [2, 3], ids=["pair", "triplet"])
@pytest.mark.parametrize("distances", [("lpips",), ("spatial",), ("meanpool",), ("style",), D.DISTANCES],
                         ids=["lpips", "spatial", "meanpool", "style", "all"])
def test_cpp_backward_matches_the_float64_reference(distances, count, channels_last):
    feats = make_feats(3, LAYERS, count, seed=30 + count)  # every sample of a has an all-zero vector
    feats = [[_layout(t, channels_last) for t in lst] for lst in feats]
    if count == 3:
        feats[2][1] = feats[0][1].clone()  # equal maps: a zero term, whose gradient must be exactly finite
    _check(feats, distances)


def test_cpp_backward_gives_gradients_only_where_asked():
    feats = make_feats(2, ODD_LAYERS, 3, seed=41)
    needs = [[False] * len(ODD_LAYERS), [True, False, True, False, True, False], [False] * len(ODD_LAYERS)]
    needs[2][3] = True
    _check(feats, D.DISTANCES, needs)


def test_gradients_are_zero_at_equal_inputs_and_finite_at_zero_vectors():
    feats = make_feats(2, ODD_LAYERS, 2, seed=43)
    feats[1] = [t.clone() for t in feats[0]]
    feats[0][2][1] = 0.0  # a whole all-zero sample
    feats[1][2][1] = 0.0
    inputs = [[t.clone().requires_grad_() for t in lst] for lst in feats]
    out = pf.fused_distance(*inputs, distances=("lpips", "spatial", "meanpool"), lin=make_lin(ODD_LAYERS), backend="cpp")
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
    lin = [w.requires_grad_() for w in make_lin(ODD_LAYERS[:2])]
    name, reasons = dispatch_plan(DistanceRequest(tuple(map(tuple, grad)), ("lpips",), lin))
    assert name == "torch" and any("lpips weights require grad" in r for r in reasons["cpp"])
    out = pf.fused_distance(*grad, distances=("spatial",), backend="cpp")["spatial"].sum()
    with pytest.raises(RuntimeError, match="differentiable once; for second derivatives .* backend='torch'"):
        torch.autograd.grad(out, grad[0][0], create_graph=True)


def test_backward_kernel_argument_errors_are_clear():
    a = torch.rand(1, 2, 2, 2)
    row = (a.data_ptr(), a.data_ptr(), 0, 8, 8, 0, 2, 4, 0, False)
    upstream = torch.zeros(4, 1, 1, 1)
    spatial, style = (1 << _C.DISTANCE_SLOTS.index(name) for name in ("spatial", "style"))
    grad = torch.empty_like(a)
    with pytest.raises(ValueError, match="style is differentiated by the caller"):
        _C.fused_distance_backward_cpu([row], 1, 2, style, "float32", upstream.data_ptr(), [(grad.data_ptr(), 0, 0, 8, 0, 0)])
    with pytest.raises(ValueError, match="one gradient row per layer: 0 for 1 layers"):
        _C.fused_distance_backward_cpu([row], 1, 2, spatial, "float32", upstream.data_ptr(), [])
    with pytest.raises(ValueError, match="gradient 0 is misaligned or has a negative batch stride"):
        _C.fused_distance_backward_cpu([row], 1, 2, spatial, "float32", upstream.data_ptr(), [(grad.data_ptr(), 0, 0, -8, 0, 0)])
