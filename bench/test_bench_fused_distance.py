"""pytest-benchmark: the fused op (all four distances, all layers) per backend at real tap shapes.

    pytest bench/test_bench_fused_distance.py --benchmark-columns=median,iqr,ops
"""

import pytest
import torch
from cases import TAP_SHAPES, runner, tap_features


@pytest.mark.parametrize("count", [2, 3], ids=["pair", "triplet"])
@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("net", list(TAP_SHAPES))
def test_fused_distance(benchmark, net, backend, count):
    feats = tap_features(net, count)
    benchmark.group = f"fused_distance {net} taps, batch 64, {'pair' if count == 2 else 'triplet'}"
    with torch.no_grad():
        out = benchmark.pedantic(runner(backend, feats), rounds=3 if backend == "torch" else 7, warmup_rounds=1)
    terms = out if isinstance(out, dict) else out[0]
    assert all(torch.isfinite(v).all() for v in terms.values())
