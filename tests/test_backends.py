"""Dispatch: auto picks per distance, explicit backends explain why they cannot run."""

import pytest
import torch

import perceptual_fast as pf
from perceptual_fast.backends import ENV_VAR, DistanceRequest, dispatch_plan


def _request(distances, dtype=torch.float32, grad=False):
    f0 = [torch.rand(2, 4, 5, 5, dtype=dtype, requires_grad=grad), torch.rand(2, 8, 3, 3, dtype=dtype)]
    f1 = [torch.rand_like(t) for t in f0]
    return DistanceRequest((tuple(f0), tuple(f1)), tuple(distances), [torch.rand(4, dtype=dtype), torch.rand(8, dtype=dtype)])


def test_auto_sends_a_float32_cpu_request_to_cpp():
    backend, reasons = dispatch_plan(_request(("spatial", "lpips", "meanpool", "style")))
    assert backend == "cpp" and reasons["cpp"] == [] and reasons["torch"] == []
    assert any("CUDA tensors" in r for r in reasons["cuda"])


def test_auto_falls_back_for_float64_and_gradients():
    backend, reasons = dispatch_plan(_request(("spatial",), dtype=torch.float64))
    assert backend == "torch" and any("one dtype among float32, bfloat16" in r for r in reasons["cpp"])
    backend, reasons = dispatch_plan(_request(("spatial",), grad=True))
    assert backend == "torch" and reasons["cpp"] == ["it has no backward and gradients are needed"]
    with torch.no_grad():  # no gradients needed: the kernel can take it
        assert dispatch_plan(_request(("spatial",), grad=True))[0] == "cpp"


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
    lin = [torch.rand(t.shape[1]) for t in a]
    ref_ab = pf.fused_distance([t.double() for t in a], [t.double() for t in b], distances=pf.DISTANCES, lin=lin, backend="torch")
    for backend in ("auto", "torch"):
        ab, ac = pf.fused_distance(a, b, c, distances=pf.DISTANCES, lin=lin, backend=backend)
        assert ab.keys() == ac.keys() == set(pf.DISTANCES)
        for name in pf.DISTANCES:
            torch.testing.assert_close(ab[name].double(), ref_ab[name], rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(ac[name], pf.fused_distance(a, c, distances=(name,), lin=lin, backend=backend)[name])


def test_fused_distance_rejects_mismatched_layers():
    a = [torch.rand(2, 3, 4, 4)]
    with pytest.raises(ValueError, match=r"layer 0: feats_a \(2, 3, 4, 4\) and feats_b \(2, 3, 4, 5\) must be equal"):
        pf.fused_distance(a, [torch.rand(2, 3, 4, 5)])
    with pytest.raises(ValueError, match="same non-zero number of layers"):
        pf.fused_distance(a, a + a)
