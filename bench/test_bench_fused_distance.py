"""pytest-benchmark: the fused op (all four distances, all layers) per backend at real tap shapes.

    pytest bench/test_bench_fused_distance.py --benchmark-columns=median,iqr,ops

Each case's result is also checked (outside the timed rounds) against the float64 reference, so a
benchmark never times a kernel that computes the wrong thing.
"""

import pytest
import torch
from cases import BATCH, DISTANCES, TAP_SHAPES, runner, tap_features, tap_lin

from perceptual_fast.ops.fused_distance import reference as D

# Relative to the float64 reference (measured worst, batch 64: 2.4e-6, torch's meanpool on vgg16 taps;
# cpp 1.9e-6): the cpp kernel computes in float32 with float64 sums, the torch backend is the
# reference composite in float32.
RTOL = {"cpp": 1e-5, "torch": 1e-5}
_REFERENCE = {}


def reference(net, count, feats, lin, chunk=8):
    """Float64 reference terms of (net, count), computed once and shared by both backends' cases, a
    few samples at a time so resnet50's [2048, 2048] float64 Gram matrices stay small."""
    if (net, count) not in _REFERENCE:
        f64 = [[t.double() for t in lst] for lst in feats]
        w64 = [w.double() for w in lin]
        parts = []
        for s in range(0, BATCH, chunk):
            part = [[t[s : s + chunk] for t in lst] for lst in f64]
            parts.append([D.layer_terms(part[0], other, DISTANCES, w64) for other in part[1:]])
        _REFERENCE[net, count] = [{n: torch.cat([p[q][n] for p in parts]) for n in DISTANCES} for q in range(count - 1)]
    return _REFERENCE[net, count]


@pytest.mark.parametrize("count", [2, 3], ids=["pair", "triplet"])
@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("net", list(TAP_SHAPES))
def test_fused_distance(benchmark, net, backend, count):
    feats = tap_features(net, count)
    lin = tap_lin(feats)
    run = runner(backend, feats, lin=lin)
    benchmark.group = f"fused_distance {net} taps, batch 64, {'pair' if count == 2 else 'triplet'}"
    with torch.no_grad():
        out = benchmark.pedantic(run, rounds=3 if backend == "torch" else 7, warmup_rounds=1)
    # The result (of the last round; every round computes the same) against the reference, once per
    # case and outside the timed rounds.
    want = reference(net, count, feats, lin)
    got = [out] if count == 2 else list(out)
    for g, w in zip(got, want, strict=True):
        for name in DISTANCES:
            assert g[name].shape == (BATCH, len(TAP_SHAPES[net])) and bool((w[name] > 0).all()), name
            torch.testing.assert_close(g[name].double(), w[name], rtol=RTOL[backend], atol=0, msg=name)
