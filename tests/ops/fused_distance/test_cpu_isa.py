"""The CPU kernels' ISA variants (kernels/cpu/isa.h, csrc/cpu_dispatch.cpp): every variant this CPU
runs equals the float64 reference, forward and backward; the choice at run time, forced by
PERCEPTUAL_FAST_CPU_ISA or refused with the CPU's features. (The build's flags: tests/test_build.py.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fused_distance_cases import LARGE_LAYERS, ODD_LAYERS, assert_matches_reference, make_feats, make_weights

import perceptual_fast as pf
from perceptual_fast import _C
from perceptual_fast.ops.fused_distance import reference as D

VARIANTS = [name for name, _ in _C.cpu_isa_variants()]
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("count", [2, 3], ids=["pair", "triplet"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_every_variant_this_cpu_runs_equals_the_reference(variant, count, channels_last):
    layers = ODD_LAYERS + LARGE_LAYERS
    feats = make_feats(3, layers, count, seed=60 + count)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    feats = [[t.contiguous(memory_format=fmt) for t in lst] for lst in feats]
    weights = make_weights(layers)
    assert _C.cpu_isa() == variant
    got = pf.fused_distance(*feats, distances=D.DISTANCES, **weights, backend="cpp")
    assert_matches_reference(got, feats, D.DISTANCES, weights)
    for dtype in (torch.bfloat16,):
        low = [[t.to(dtype) for t in lst] for lst in feats]
        assert_matches_reference(pf.fused_distance(*low, distances=D.DISTANCES, **weights, backend="cpp"), low, D.DISTANCES, weights)


def test_every_variant_gives_the_same_gradients(variant):
    """The backward kernel of each variant against the float64 reference's autograd."""
    feats = make_feats(2, ODD_LAYERS + LARGE_LAYERS, 2, seed=62)
    weights = make_weights(ODD_LAYERS + LARGE_LAYERS)
    x = [t.clone().requires_grad_() for t in feats[0]]
    out = pf.fused_distance(x, feats[1], distances=("lpips", "spatial", "meanpool"), **weights, backend="cpp")
    sum(v.sum() for v in out.values()).backward()
    x64 = [t.double().requires_grad_() for t in feats[0]]
    ref = D.layer_terms(x64, [t.double() for t in feats[1]], ("lpips", "spatial", "meanpool"), [w.double() for w in weights["lin"]])
    sum(v.sum() for v in ref.values()).backward()
    for got, want in zip(x, x64):
        scale = float(want.grad.abs().max())
        assert float((got.grad.double() - want.grad).abs().max()) <= 2e-5 * scale + 1e-12


def test_the_best_variant_this_cpu_runs_is_the_default_and_names_are_checked():
    runs = [name for name, ok in _C.cpu_isa_variants() if ok]
    child = subprocess.run([sys.executable, "-c", "import perceptual_fast._C as C; print(C.cpu_isa())"], capture_output=True,
                           text=True, env={k: v for k, v in os.environ.items() if k != "PERCEPTUAL_FAST_CPU_ISA"},
                           cwd=ROOT.parent, check=True)
    assert child.stdout.strip() == runs[-1]
    with pytest.raises(ValueError, match=r"no CPU kernel variant 'sse9' in this build; built: "):
        _C.set_cpu_isa("sse9")
    assert pf.build_info()["cpu_isa"] == _C.cpu_isa()


@pytest.mark.parametrize("forced", [name for name, ok in _C.cpu_isa_variants() if ok] + ["sse9"])
def test_the_environment_variable_forces_a_variant_or_says_why_not(forced):
    code = "import torch, perceptual_fast._C as C; print(C.cpu_isa())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent,
                           env={**os.environ, "PERCEPTUAL_FAST_CPU_ISA": forced})
    if forced == "sse9":
        assert child.returncode != 0 and "no CPU kernel variant 'sse9' in this build" in child.stderr
    else:
        assert child.returncode == 0 and child.stdout.strip() == forced


def test_a_variant_the_cpu_lacks_is_refused_with_its_features():
    lacking = [name for name, ok in _C.cpu_isa_variants() if not ok]
    if not lacking:
        pytest.skip(f"this CPU runs every built variant ({VARIANTS}): nothing to refuse here")
    with pytest.raises(ValueError, match=rf"'{lacking[0]}' needs .* which this CPU lacks \(sse4.2 "):
        _C.set_cpu_isa(lacking[0])


def test_the_cpu_kernels_follow_torchs_thread_count():
    """torch.set_num_threads rules the fused op's OpenMP threads too (forward and backward), so one
    setting caps the whole Scorer."""
    feats = make_feats(4, ODD_LAYERS, 2, seed=64)
    before = torch.get_num_threads()
    try:
        for threads in sorted({1, before}):
            torch.set_num_threads(threads)
            pf.fused_distance(*feats, distances=("spatial",), backend="cpp")
            assert _C.last_cpu_threads() == threads
            x = [t.clone().requires_grad_() for t in feats[0]]
            pf.fused_distance(x, feats[1], distances=("spatial",), backend="cpp")["spatial"].sum().backward()
            assert _C.last_cpu_threads() == threads
    finally:
        torch.set_num_threads(before)
