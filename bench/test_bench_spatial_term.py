"""pytest-benchmark: the spatial + lpips terms at real tap shapes, cpp kernel vs the torch reference.

    pytest bench/test_bench_spatial_term.py --benchmark-columns=median,iqr,ops
"""

import pytest
import torch
from cases import NETS, runner, tap_features


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("net", NETS)
def test_spatial_lpips_terms(benchmark, net, backend):
    feats0, feats1 = tap_features(net)
    benchmark.group = f"spatial+lpips {net} taps, batch 64"
    with torch.no_grad():
        out = benchmark(runner(backend, feats0, feats1))
    assert all(torch.isfinite(v).all() for v in out.values())
