"""The GPU backends (triton, cuda) against the float64 reference.

Triton runs everywhere: on a GPU, or here under TRITON_INTERPRET=1 on CPU tensors (small shapes,
the interpreter's 16-wide blocks). The cuda backend runs only where torch sees a GPU and _C was
built with CUDA (``bash bench/gpu_check.sh`` on a GPU machine runs this file). Both compute in
float32 on the given maps, and the reference widens the same rounded 16-bit values, so one
tolerance (1e-5 relative) holds for every dtype and distance.
"""

import os

import pytest
import torch

import perceptual_fast as pf
from perceptual_fast.ops.fused_distance import reference as D
from perceptual_fast.ops.fused_distance import BACKENDS, DistanceRequest, dispatch_plan

if not os.environ.get("CI"):  # in CI a missing triton is a failure, not a skip
    pytest.importorskip("triton", exc_type=ModuleNotFoundError)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_CUDA_READY = DEVICE == "cuda" and not BACKENDS["cuda"].unsupported(
    DistanceRequest(((torch.ones(1, 1, 1, 1, device=DEVICE),),) * 2, ("spatial",)))
GPU_BACKENDS = [
    pytest.param("triton", marks=pytest.mark.skipif(DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
                                                    reason="Triton needs a GPU or TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=pytest.mark.skipif(not _CUDA_READY, reason="needs a GPU and _C built with CUDA")),
]
# C=3 at 17x23, 1x1 maps, channels that are not multiples of any block (16 here, 32/64 on a GPU),
# and C=80: several style block pairs off the diagonal even at the GPU's 64-channel blocks.
LAYERS = [(3, 17, 23), (1, 1, 1), (7, 1, 1), (21, 9, 11), (34, 3, 5), (80, 4, 5)]
TOLERANCE = dict(rtol=1e-5, atol=1e-9)


def _feats(count, dtype, seed, batch=2, layers=LAYERS):
    g = torch.Generator().manual_seed(seed)
    first = [torch.relu(torch.randn(batch, *s, generator=g)) for s in layers]
    lists = [first] + [[torch.relu(t + 0.5 * torch.randn(t.shape, generator=g)) for t in first] for _ in range(count - 1)]
    for t in first:
        t[:, :, 0, 0] = 0.0  # an all-zero feature vector
    return [[t.to(device=DEVICE, dtype=dtype) for t in lst] for lst in lists]


def _lin(layers=LAYERS):
    return [torch.rand(s[0], device=DEVICE) + 0.1 for s in layers]


def _assert_matches_float64(got, feats, distances, lin):
    """``got``: the op's result for ``feats`` (pair dict or triplet tuple), checked against float64."""
    got = [got] if isinstance(got, dict) else list(got)
    f64 = [[t.double() for t in lst] for lst in feats]
    w64 = [w.double() for w in lin] if lin is not None else None
    for q, terms in enumerate(got):
        assert set(terms) == set(distances)
        want = D.layer_terms(f64[0], f64[q + 1], distances, w64)
        for name in distances:
            assert terms[name].dtype == torch.float32 and terms[name].shape == want[name].shape
            assert torch.isfinite(terms[name]).all(), name
            torch.testing.assert_close(terms[name].double(), want[name], **TOLERANCE, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("count", [2, 3])
def test_equals_the_float64_reference(backend, count, dtype):
    feats, lin = _feats(count, dtype, seed=count), _lin()
    _assert_matches_float64(pf.fused_distance(*feats, distances=D.DISTANCES, lin=lin, backend=backend), feats, D.DISTANCES, lin)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("distances", [("meanpool",), ("style",), ("lpips",), ("spatial", "style"), ("lpips", "meanpool")])
@pytest.mark.parametrize("count", [2, 3])
def test_distance_subsets_give_the_reference_values(backend, distances, count):
    feats = _feats(count, torch.float32, seed=5)
    lin = _lin() if "lpips" in distances else None
    _assert_matches_float64(pf.fused_distance(*feats, distances=distances, lin=lin, backend=backend), feats, distances, lin)


def _layouts():
    """Maps the trunks and users hand over: (name, [N, C, H, W] maker from a contiguous tensor)."""
    return {
        "batch-strided": lambda t: torch.stack([t, -t], dim=1).flatten(0, 1)[::2],  # batch stride 2*C*H*W
        "batch-sliced": lambda t: torch.cat([t, t, t])[1 : 1 + t.shape[0]],
        "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
        "expanded": lambda t: t[:1].expand(t.shape),
    }


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("layout", list(_layouts()))
def test_layouts_give_the_reference_values(backend, layout):
    # [N, C, 1, 1] and C = 1 taps: channels_last strides of size-1 dims differ from NCHW ones.
    layers = [(5, 1, 1), (1, 6, 7), (16, 3, 4)]
    feats = [[_layouts()[layout](t) for t in lst] for lst in _feats(3, torch.float32, seed=9, batch=3, layers=layers)]
    lin = _lin(layers)
    _assert_matches_float64(pf.fused_distance(*feats, distances=D.DISTANCES, lin=lin, backend=backend), feats, D.DISTANCES, lin)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_identical_inputs_give_exact_zeros(backend, dtype):
    feats = _feats(3, dtype, seed=7)
    same = [feats[0], [t.clone() for t in feats[0]], [t.clone() for t in feats[0]]]
    for terms in pf.fused_distance(*same, distances=D.DISTANCES, lin=_lin(), backend=backend):
        for name in D.DISTANCES:
            assert torch.equal(terms[name], torch.zeros_like(terms[name])), name


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_batches_beyond_one_launch_are_split(backend, monkeypatch):
    """More samples than grid axis 1 takes (65,535) run as several launches; forced to 2 here."""
    impl = BACKENDS[backend]
    monkeypatch.setattr(type(impl), "max_batch", 2)
    seen, compute = [], impl.compute
    monkeypatch.setattr(impl, "compute", lambda request: seen.append(request.feats[0][0].shape[0]) or compute(request))
    feats, lin = _feats(3, torch.float32, seed=11, batch=5, layers=LAYERS[:3]), _lin(LAYERS[:3])
    _assert_matches_float64(pf.fused_distance(*feats, distances=D.DISTANCES, lin=lin, backend=backend), feats, D.DISTANCES, lin)
    assert seen == [2, 2, 1]


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_an_empty_batch_gives_empty_terms(backend):
    feats = [[t[:0] for t in lst] for lst in _feats(3, torch.float32, seed=12)]
    for terms in pf.fused_distance(*feats, distances=D.DISTANCES, lin=_lin(), backend=backend):
        assert all(terms[name].shape == (0, len(LAYERS)) for name in D.DISTANCES)


def test_auto_never_picks_the_interpreter_for_cpu_tensors():
    if DEVICE != "cpu":
        pytest.skip("CPU tensors only")
    request = DistanceRequest(tuple(map(tuple, _feats(2, torch.float32, seed=6))), ("spatial",))
    assert dispatch_plan(request)[0] == "cpp"
