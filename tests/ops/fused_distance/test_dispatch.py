"""Dispatch: auto picks per distance, explicit backends explain why they cannot run."""

import pytest
import torch
from fused_distance_cases import make_weights

import perceptual_fast as pf
from perceptual_fast.ops.fused_distance import ENV_VAR, DistanceRequest, dispatch_plan


def _request(distances, dtype=torch.float32, grad=False):
    f0 = [torch.rand(2, 4, 5, 5, dtype=dtype, requires_grad=grad), torch.rand(2, 8, 3, 3, dtype=dtype)]
    f1 = [torch.rand_like(t) for t in f0]
    return DistanceRequest((tuple(f0), tuple(f1)), tuple(distances), [torch.rand(4, dtype=dtype), torch.rand(8, dtype=dtype)])


def test_auto_sends_a_float32_cpu_request_to_cpp():
    backend, reasons = dispatch_plan(_request(("spatial", "lpips", "meanpool", "style")))
    assert backend == "cpp" and reasons["cpp"] == [] and reasons["torch"] == []
    assert any("CUDA tensors" in r for r in reasons["cuda"])


def test_auto_falls_back_for_float64_and_keeps_cpp_for_gradients():
    backend, reasons = dispatch_plan(_request(("spatial",), dtype=torch.float64))
    assert backend == "torch" and any("one dtype among float32, bfloat16" in r for r in reasons["cpp"])
    backend, reasons = dispatch_plan(_request(("spatial",), grad=True))  # cpp has a backward (test_backward.py)
    assert backend == "cpp" and reasons["cpp"] == []
    with torch.no_grad():
        assert dispatch_plan(_request(("spatial",), grad=True))[0] == "cpp"
    assert reasons["torch"] == []


def test_explicit_backend_that_cannot_run_says_why():
    with pytest.raises(pf.BackendUnavailable, match=r"backend .cpp. cannot run this request: .*one dtype among float32, bfloat16"):
        dispatch_plan(_request(("meanpool",), dtype=torch.float64), backend="cpp")


def test_environment_variable_overrides(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "torch")
    assert dispatch_plan(_request(("spatial",)), backend="cpp")[0] == "torch"
    monkeypatch.setenv(ENV_VAR, "gpu")
    with pytest.raises(ValueError, match=r"PERCEPTUAL_FAST_BACKEND='gpu' is not a backend"):
        dispatch_plan(_request(("spatial",)))


def test_fused_distance_triplet_equals_two_pairs_on_every_backend():
    g = torch.Generator().manual_seed(0)
    a, b, c = ([torch.relu(torch.randn(3, ch, h, w, generator=g)) for ch, h, w in [(3, 17, 23), (16, 1, 1), (64, 7, 7)]] for _ in range(3))
    weights = make_weights([t.shape[1:] for t in a])
    ref_ab = pf.fused_distance([t.double() for t in a], [t.double() for t in b], distances=pf.DISTANCES, **weights, backend="torch")
    for backend in ("auto", "torch"):
        ab, ac = pf.fused_distance(a, b, c, distances=pf.DISTANCES, **weights, backend=backend)
        assert ab.keys() == ac.keys() == set(pf.DISTANCES)
        for name in pf.DISTANCES:
            torch.testing.assert_close(ab[name].double(), ref_ab[name], rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(ac[name], pf.fused_distance(a, c, distances=(name,), **weights, backend=backend)[name])


def test_fused_distance_rejects_mismatched_layers():
    a = [torch.rand(2, 3, 4, 4)]
    with pytest.raises(ValueError, match=r"layer 0: feats_a \(2, 3, 4, 4\) and feats_b \(2, 3, 4, 5\) must be equal"):
        pf.fused_distance(a, [torch.rand(2, 3, 4, 5)])
    with pytest.raises(ValueError, match="same non-zero number of layers"):
        pf.fused_distance(a, a + a)


def test_kernels_refuse_features_on_two_devices():
    """cuda:0 with cuda:1 is the real case; a meta tensor beside CPU ones stands in for it here."""
    f0 = (torch.rand(2, 4, 3, 3), torch.rand(2, 4, 3, 3, device="meta"))
    request = DistanceRequest((f0, tuple(torch.rand(2, 4, 3, 3) for _ in f0)), ("spatial",))
    _, reasons = dispatch_plan(request, backend="torch")
    for name in ("cpp", "cuda", "triton"):
        assert any("all features must be on one device, got ['cpu', 'meta']" in r for r in reasons[name]), name


@pytest.mark.parametrize("backend", ["auto", "torch", "cpp"])
def test_lin_weights_must_have_one_weight_per_channel(backend):
    a = [torch.rand(2, 4, 3, 3), torch.rand(2, 8, 2, 2)]
    with pytest.raises(ValueError, match=r"layer 1: the lpips weights have 7 elements but the features have 8 channels"):
        pf.fused_distance(a, [t.flip(0) for t in a], distances="lpips", lin=[torch.rand(4), torch.rand(7)], backend=backend)


@pytest.mark.parametrize("shape", [(2, 0, 3, 3), (2, 4, 0, 3)])
def test_maps_without_channels_or_positions_are_an_error(shape):
    with pytest.raises(ValueError, match=r"layer 0: feature maps .* have no channels or no positions; every layer needs C >= 1"):
        pf.fused_distance([torch.rand(shape)], [torch.rand(shape)], distances="spatial")


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_an_empty_batch_gives_empty_terms(backend):
    a = [torch.rand(0, 4, 3, 3), torch.rand(0, 8, 2, 2)]
    ab, ac = pf.fused_distance(a, a, a, distances=pf.DISTANCES, **make_weights([t.shape[1:] for t in a]), backend=backend)
    assert all(t[name].shape == (0, 2) for t in (ab, ac) for name in pf.DISTANCES)


def test_cpp_reads_size_one_taps_in_any_layout():
    """A channels_last [N, C, 1, 1] or C = 1 tap has strides NCHW code would not expect on its size-1 dims."""
    g = torch.Generator().manual_seed(3)
    a = [torch.rand(3, 6, 1, 1, generator=g), torch.rand(3, 1, 5, 4, generator=g)]
    b = [torch.rand(t.shape, generator=g) for t in a]
    cl = lambda ts: [t.contiguous(memory_format=torch.channels_last) for t in ts]  # noqa: E731
    weights = make_weights([t.shape[1:] for t in a])
    want = pf.fused_distance([t.double() for t in a], [t.double() for t in b], distances=pf.DISTANCES,
                             **{k: [w.double() for w in ws] for k, ws in weights.items()}, backend="torch")
    got = pf.fused_distance(cl(a), cl(b), distances=pf.DISTANCES, **weights, backend="cpp")
    for name in pf.DISTANCES:
        torch.testing.assert_close(got[name].double(), want[name], rtol=1e-5, atol=1e-9)


def test_the_kernels_slot_order_is_the_python_order():
    """kernels/distance_slots.h (C++ and CUDA) and reference.DISTANCES (Python, Triton launcher) agree."""
    from perceptual_fast import _C

    assert _C.DISTANCE_SLOTS == pf.DISTANCES == ("lpips", "spatial", "meanpool", "style", "dists")


def test_the_op_folder_is_reachable_as_an_attribute():
    """``pf.ops.fused_distance`` is the op's package (its function is ``pf.fused_distance``): a re-export
    under the package's own name once shadowed it, and gpu_check's ``pf.ops.fused_distance.BACKENDS`` broke."""
    import perceptual_fast.ops.fused_distance as op

    assert pf.ops.fused_distance is op and pf.fused_distance is op.fused_distance and "cpp" in op.BACKENDS
