"""The fused distance op's test cases, one definition shared by this folder's tests and by
bench/gpu_check.py (which adds its GPU-sized shapes): the feature factory, the odd shapes, the
per-dtype tolerance table, the float64 reference, and where and whether each backend runs here.

Every backend computes in float32 on the given maps and the reference widens the same rounded
16-bit values exactly, so one tolerance holds for every backend, dtype and distance.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import pytest
import torch

from perceptual_fast.ops.fused_distance import BACKENDS, DistanceRequest
from perceptual_fast.ops.fused_distance import reference as D

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TOLERANCE = {dtype: dict(rtol=1e-5, atol=1e-9) for dtype in DTYPES}
"""Against the float64 reference, per map dtype (the same for all: see the module docstring)."""

ODD_LAYERS = [(3, 17, 23), (1, 1, 1), (7, 1, 1), (13, 9, 11), (34, 3, 5), (80, 4, 5)]
"""Per layer (C, H, W): C=3 at 17x23, 1x1 maps, channel counts that are multiples of no block
(4/16 on the CPU, 16 in Triton's interpreter, 32/64 on a GPU), and C=80: style block pairs off the
diagonal even at the GPU's 64-channel blocks."""
LARGE_LAYERS = [(64, 15, 15), (384, 3, 3), (5, 41, 37)]
"""Maps larger than one tile, many style blocks, the vgg16/alexnet first-tap channel counts: for
the backends that run compiled code (too slow in Triton's interpreter)."""

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKEND_NAMES = ("cpp", "torch", "triton", "cuda")


def interpreted(backend: str) -> bool:
    """Triton on CPU tensors runs in its interpreter: small shapes only."""
    return backend == "triton" and device_of(backend) == "cpu"


def device_of(backend: str) -> str:
    """Where a backend's features live in these tests: the CPU kernel on the CPU, the others on the GPU if any."""
    return "cpu" if backend == "cpp" else DEVICE


def layers_for(backend: str) -> List[tuple]:
    return ODD_LAYERS + ([] if interpreted(backend) else LARGE_LAYERS)


def make_feats(batch: int, layers: Sequence[tuple], count: int, seed: int, dtype=torch.float32, device="cpu",
               zero_positions: bool = True, change: float = 0.4, relative: bool = False,
               chunk: int = 256) -> List[List[torch.Tensor]]:
    """``count`` lists of maps ``[batch, C, H, W]`` in ``dtype`` on ``device``: the first ReLU'd normals,
    each later one relu(first + ``change`` * noise) (realistic distances) or, with ``relative``,
    first * (1 + ``change`` * noise) (small changes: style and meanpool cancel most digits). With
    ``zero_positions`` every sample of the first list has an all-zero feature vector at (0, 0), as
    ReLU taps have. Drawn on ``device`` from ``seed``, ``chunk`` samples at a time, so GPU-sized
    batches need no large float32 temporaries."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = [[torch.empty(batch, *s, dtype=dtype, device=device) for s in layers] for _ in range(count)]
    for lo in range(0, batch, chunk):
        hi = min(batch, lo + chunk)
        for layer, s in enumerate(layers):
            a = torch.relu(torch.randn(hi - lo, *s, generator=g, device=device))
            if zero_positions:
                a[:, :, 0, 0] = 0.0
            out[0][layer][lo:hi] = a
            for k in range(1, count):
                noise = change * torch.randn(a.shape, generator=g, device=device)
                out[k][layer][lo:hi] = a * (1 + noise) if relative else torch.relu(a + noise)
    return out


Weights = Dict[str, List[torch.Tensor]]
"""The op's weight arguments as keywords: ``lin`` (lpips, L x ``[C_l]``) and ``dists_weights`` (L x ``[2, C_l]``)."""


def make_weights(layers: Sequence[tuple], seed: int = 0, device="cpu") -> Weights:
    """Positive lpips channel weights ``[C_l]`` and dists alpha/beta ``[2, C_l]`` (normalised over all
    layers, as DISTS's) per layer, as the op's keywords: ``fused_distance(..., **weights)``."""
    g = torch.Generator().manual_seed(seed)
    lin = [(torch.rand(s[0], generator=g) + 0.1).to(device) for s in layers]
    alpha_beta = [torch.rand(2, s[0], generator=g) + 0.1 for s in layers]
    total = sum(float(w.sum()) for w in alpha_beta)
    return {"lin": lin, "dists_weights": [(w / total).to(device) for w in alpha_beta]}


def reference(feats, weights: Optional[Weights] = None, distances=D.DISTANCES,
              chunk: Optional[int] = None) -> List[Dict[str, torch.Tensor]]:
    """The float64 reference terms ``{name: [N, L]}`` per comparison (b, then c, against a), on
    float64 copies made ``chunk`` samples at a time if given (bounded memory for GPU-sized batches)."""
    n = feats[0][0].shape[0]
    step = chunk or max(n, 1)
    w64 = {k: [w.double() for w in v] for k, v in (weights or {}).items()}
    parts = []
    for lo in range(0, max(n, 1), step):
        part = [[t[lo : lo + step].double() for t in lst] for lst in feats]
        parts.append([D.layer_terms(part[0], other, distances, **w64) for other in part[1:]])
    return [{d: torch.cat([p[q][d] for p in parts]) for d in distances} for q in range(len(feats) - 1)]


def assert_matches_reference(got, feats, distances=D.DISTANCES, weights: Optional[Weights] = None, dtype=None) -> None:
    """``got`` (the op's pair dict or triplet tuple on ``feats``) against the float64 reference: keys,
    float32 results of shape [N, L], finite, within the tolerance of the maps' dtype."""
    got = [got] if isinstance(got, dict) else list(got)
    want = reference(feats, weights, distances)
    tol = TOLERANCE[dtype or feats[0][0].dtype]
    assert len(got) == len(want)
    for terms, expected in zip(got, want):
        assert set(terms) == set(distances)
        for name in distances:
            assert terms[name].dtype == torch.float32 and terms[name].shape == expected[name].shape, name
            assert torch.isfinite(terms[name]).all(), name
            torch.testing.assert_close(terms[name].double().cpu(), expected[name].cpu(), **tol, msg=lambda m: f"{name}: {m}")


def require(backend: str, feats, distances=("spatial",), weights: Optional[Weights] = None) -> None:
    """Skips the test with the backend's own reasons when it cannot run ``feats`` on this machine
    (a Triton missing where CI runs is a failure, not a skip)."""
    if device_of(backend) == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"{backend}: no CUDA device here")
    if backend == "triton" and device_of(backend) == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton: CPU tensors need TRITON_INTERPRET=1")
    reasons = BACKENDS[backend].unsupported(DistanceRequest(tuple(map(tuple, feats)), tuple(distances), **(weights or {})))
    if reasons:
        if os.environ.get("CI") and any("not installed" in r for r in reasons):
            pytest.fail(f"{backend}: " + "; ".join(reasons))
        pytest.skip(f"{backend}: " + "; ".join(reasons))
