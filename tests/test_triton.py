"""The Triton kernels (under TRITON_INTERPRET=1 on CPU: small shapes) against the float64 reference."""

import os

import pytest
import torch

import perceptual_fast as pf
from perceptual_fast import distances as D

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton needs a GPU or TRITON_INTERPRET=1",
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# C=3, 17x23 and 1x1 maps, channels that are not multiples of the 16/64-wide blocks.
LAYERS = [(3, 17, 23), (1, 1, 1), (7, 1, 1), (21, 9, 11), (34, 3, 5)]
TOLERANCE = {
    torch.float32: dict(rtol=1e-5, atol=1e-8),
    # Low-precision inputs: the reference sees the same rounded values; the Gram tiles are fed to
    # tl.dot in the input dtype after normalisation, which rounds once more.
    torch.bfloat16: dict(rtol=2e-2, atol=1e-6),
    torch.float16: dict(rtol=3e-3, atol=1e-7),
}


def _feats(count, dtype, seed, batch=2):
    g = torch.Generator().manual_seed(seed)
    first = [torch.relu(torch.randn(batch, *s, generator=g)) for s in LAYERS]
    lists = [first] + [[torch.relu(t + 0.5 * torch.randn(t.shape, generator=g)) for t in first] for _ in range(count - 1)]
    for t in first:
        t[:, :, 0, 0] = 0.0  # an all-zero feature vector
    return [[t.to(device=DEVICE, dtype=dtype) for t in lst] for lst in lists]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("count", [2, 3])
def test_triton_equals_the_float64_reference(count, dtype):
    feats = _feats(count, dtype, seed=count)
    lin = [torch.rand(s[0], device=DEVICE) for s in LAYERS]
    got = pf.fused_distance(*feats, distances=D.DISTANCES, lin=lin, backend="triton")
    got = [got] if count == 2 else list(got)
    f64 = [[t.double() for t in lst] for lst in feats]
    for q, terms in enumerate(got):
        want = D.layer_terms(f64[0], f64[q + 1], D.DISTANCES, [w.double() for w in lin])
        for name in D.DISTANCES:
            assert terms[name].dtype == torch.float32 and terms[name].shape == (2, len(LAYERS))
            assert torch.isfinite(terms[name]).all(), name
            torch.testing.assert_close(terms[name].double(), want[name], **TOLERANCE[dtype], msg=name)


def test_triton_subset_leaves_the_other_slots_alone():
    feats = _feats(2, torch.float32, seed=5)
    got = pf.fused_distance(*feats, distances=("meanpool",), backend="triton")
    want = pf.fused_distance(*feats, distances=("meanpool",), backend="torch")
    assert set(got) == {"meanpool"}
    torch.testing.assert_close(got["meanpool"], want["meanpool"], rtol=1e-5, atol=1e-8)


def test_auto_never_picks_the_interpreter_for_cpu_tensors():
    feats = _feats(2, torch.float32, seed=6)
    request = pf.backends.DistanceRequest(tuple(map(tuple, feats)), ("spatial",))
    if DEVICE == "cpu":
        assert pf.backends.dispatch_plan(request)[0] == "cpp"


def test_triton_identical_inputs_give_exact_zeros():
    feats = _feats(3, torch.float32, seed=7)
    same = [feats[0], [t.clone() for t in feats[0]], [t.clone() for t in feats[0]]]
    lin = [torch.rand(s[0], device=DEVICE) for s in LAYERS]
    for terms in pf.fused_distance(*same, distances=D.DISTANCES, lin=lin, backend="triton"):
        for name in D.DISTANCES:
            assert torch.equal(terms[name], torch.zeros_like(terms[name])), name
