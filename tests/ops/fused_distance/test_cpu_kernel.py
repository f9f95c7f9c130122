"""The CPU kernel (backend ``cpp``, perceptual_fast._C.fused_distance_cpu) beyond what every backend is
checked for in test_correctness.py: NaN-poisoned outputs, layouts read in place or copied, the Gram
stage's blocks and chunks, determinism across runs and thread counts, argument errors; and the op's
gradients (gradcheck in float64)."""

import os
import subprocess
import sys

import pytest
import torch
from fused_distance_cases import LARGE_LAYERS, ODD_LAYERS, TOLERANCE, make_feats, make_weights, reference

import perceptual_fast as pf
from perceptual_fast import _C
from perceptual_fast.ops.fused_distance import DistanceRequest
from perceptual_fast.ops.fused_distance import reference as D
from perceptual_fast.ops.fused_distance.cpu import fused_distance_cpp

# Per layer (C, H, W): the shared odd shapes plus maps larger than one tile and the vgg16 / alexnet
# first-tap channel counts.
LAYERS = ODD_LAYERS + LARGE_LAYERS


def test_kernel_writes_every_requested_output_into_a_poisoned_buffer(poisoned):
    feats = make_feats(5, [(13, 9, 11), (6, 2, 3)], 3, seed=2)
    dists = make_weights([(13, 9, 11), (6, 2, 3)])["dists_weights"]
    rows = []
    for layer in range(2):
        a, b, c = (feats[k][layer] for k in range(3))
        rows.append((a.data_ptr(), b.data_ptr(), c.data_ptr(), a.stride(0), b.stride(0), c.stride(0), a.shape[1],
                     a.shape[2] * a.shape[3], 0, dists[layer].data_ptr(), False))
    out = poisoned(5, 2, 5, 2)
    asked = [_C.DISTANCE_SLOTS.index(name) for name in ("spatial", "meanpool", "style", "dists")]
    _C.fused_distance_cpu(rows, 5, 3, sum(1 << slot for slot in asked), "float32", out.data_ptr())
    assert torch.isfinite(out[asked]).all()
    assert torch.isnan(out[_C.DISTANCE_SLOTS.index("lpips")]).all()  # lpips was not asked for: untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("count", [2, 3])
def test_channels_last_maps_are_read_in_place(count, dtype):
    """A channels_last trunk gives NHWC taps: the kernel reads them without a copy, same results."""
    feats = make_feats(3, LAYERS, count, seed=11, dtype=dtype)
    weights = make_weights(LAYERS)
    want = reference(feats, weights)
    cl = [[t.to(memory_format=torch.channels_last) for t in lst] for lst in feats]
    got = fused_distance_cpp(DistanceRequest(tuple(map(tuple, cl)), D.DISTANCES, **weights))
    for g, w in zip(got, want):
        for name in D.DISTANCES:
            torch.testing.assert_close(g[name].double(), w[name], rtol=1e-5, atol=1e-9, msg=name)


@pytest.mark.parametrize("change", [0.4, 1e-3], ids=["distorted", "near-identical"])
def test_channels_last_tiles_of_many_positions_equal_the_float64_reference(change):
    """channels_last maps of many tiles (64 channels: 256 positions a tile, 16 tiles; 3 channels; 512
    channels), where the kernel sums squared differences per channel over each tile's positions, and
    DISTS's moments over all of them: the float32 tolerance against the float64 reference, also for
    maps 0.1% apart."""
    layers = [(64, 64, 64), (3, 61, 67), (512, 9, 7)]
    feats = make_feats(2, layers, 3, seed=12, change=change, relative=change < 0.01)
    weights = make_weights(layers)
    cl = [[t.contiguous(memory_format=torch.channels_last) for t in lst] for lst in feats]
    got = pf.fused_distance(*cl, distances=D.DISTANCES, **weights, backend="cpp")
    for g, w in zip(got, reference(feats, weights), strict=True):
        for name in D.DISTANCES:
            assert bool((w[name] > 0).all()), name
            torch.testing.assert_close(g[name].double(), w[name], **TOLERANCE[torch.float32], msg=name)


def test_mixed_and_strided_layouts_are_copied_then_read():
    feats = make_feats(4, [(16, 7, 9), (5, 3, 3)], 2, seed=3)
    weights = make_weights([(16, 7, 9), (5, 3, 3)])
    want = pf.fused_distance(*feats, distances=D.DISTANCES, **weights, backend="cpp")
    mixed = [feats[0], [t.to(memory_format=torch.channels_last) for t in feats[1]]]
    strided = [[torch.cat([t, t], dim=1)[:, : t.shape[1]] for t in lst] for lst in feats]  # batch stride 2*C*H*W
    assert strided[0][0].stride(0) == 2 * feats[0][0][0].numel() and not strided[0][0].is_contiguous()
    for variant in (mixed, strided):
        got = pf.fused_distance(*variant, distances=D.DISTANCES, **weights, backend="cpp")
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=0)


# Layers that take the Gram stage's blocked paths (kernels/cpu/gram_difference.h, channel form): C_pad
# (C rounded up to 2 vectors: 16 channels with AVX2, 32 with AVX-512) gives several column blocks
# of kChannelPad channels (48 -> 3 or 2, 97 -> 7 or 4, rows not a multiple of the 4-row block), and
# positions are walked in chunks of 256 KiB / (count * C_pad * 4 bytes): 170-682 positions here,
# so 1600 and 1517 positions span 3-9 chunks, the last one partial, for a pair and for a triplet.
GRAM_LAYERS = [(48, 40, 40), (97, 37, 41)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("count", [2, 3], ids=["pair", "triplet"])
def test_cpp_gram_blocks_and_position_chunks_equal_the_float64_reference(count, dtype):
    """Every distance, but above all style, whose Gram accumulators rest between position chunks
    and are summed over the upper-triangle column blocks, against the float64 reference.
    bf16: the reference sees the same rounded values widened exactly and the kernel computes in
    float32, so the float32 tolerance applies (measured worst: 1.9e-6 relative, meanpool in float32;
    style 5e-7)."""
    feats = make_feats(2, GRAM_LAYERS, count, seed=30 + count, dtype=dtype)
    weights = make_weights(GRAM_LAYERS)
    want = reference(feats, weights)
    got = pf.fused_distance(*feats, distances=D.DISTANCES, **weights, backend="cpp")
    got = [got] if count == 2 else list(got)
    for g, w in zip(got, want, strict=True):
        for name in D.DISTANCES:
            assert g[name].shape == (2, len(GRAM_LAYERS)) and g[name].dtype == torch.float32
            assert bool((w[name] > 0).all()), name  # non-trivial distances are compared
            torch.testing.assert_close(g[name].double(), w[name], **TOLERANCE[dtype], msg=name)


def test_result_does_not_depend_on_scheduling():
    feats = make_feats(6, LAYERS, 3, seed=6)
    weights = make_weights(LAYERS)
    first = pf.fused_distance(*feats, distances=D.DISTANCES, **weights, backend="cpp")
    for _ in range(3):
        again = pf.fused_distance(*feats, distances=D.DISTANCES, **weights, backend="cpp")
        assert all(torch.equal(a, b) for x, y in zip(first, again) for a, b in zip(x.values(), y.values()))


# Run in a fresh interpreter: OpenMP reads OMP_NUM_THREADS once, when the runtime starts.
CHILD = """
import sys, torch
import perceptual_fast as pf
from perceptual_fast import _C
feats, weights, distances = torch.load(sys.argv[1])
out = pf.fused_distance(*feats, distances=distances, **weights, backend="cpp")
torch.save({"threads": _C.max_threads(), "out": out}, sys.argv[2])
"""


def test_result_does_not_depend_on_the_thread_count(tmp_path):
    """The same inputs in a process with OMP_NUM_THREADS=1 and in this one (its default count, or 2
    if that is 1): bitwise equal results. Each (sample, layer) is one thread's work, reduced in a
    fixed order, so no thread count may change a bit: 24 work items of unequal size, triplets."""
    threads = _C.max_threads()
    others = [1] if threads > 1 else [2]
    feats = make_feats(4, LAYERS[2:] + GRAM_LAYERS[:1], 3, seed=9)
    weights = make_weights([t.shape[1:] for t in feats[0]])
    distances = D.DISTANCES
    torch.save((feats, weights, distances), tmp_path / "inputs.pt")
    here = pf.fused_distance(*feats, distances=distances, **weights, backend="cpp")
    for count in others:
        env = dict(os.environ, OMP_NUM_THREADS=str(count))
        result = tmp_path / f"out{count}.pt"
        # cwd: not the checkout, whose perceptual_fast/ (no _C) would shadow the installed package
        subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "inputs.pt"), str(result)], env=env, check=True, timeout=120,
                       cwd=tmp_path)
        child = torch.load(result)
        assert child["threads"] == count != threads  # really another thread count
        for mine, theirs in zip(here, child["out"], strict=True):
            for name in distances:
                assert torch.equal(mine[name], theirs[name]), (count, name)


# Tiny odd maps for gradcheck (its finite differences cost two forward calls per input element).
GRAD_LAYERS = [(3, 3, 5), (5, 1, 3)]


@pytest.mark.parametrize("count", [2, 3], ids=["pair", "triplet"])
@pytest.mark.parametrize("name", D.DISTANCES)
def test_fused_op_gradients_pass_gradcheck_in_float64(name, count):
    """The gradients `auto` gives (it dispatches differentiable requests to a backend with a backward)
    against finite differences of the op itself, in float64, wrt every map but one.

    The exception holds an all-zero feature vector (as ReLU taps have): y / (|y| + 1e-10) is not
    differentiable there (finite differences see a jump of size ~1, the safe norm gives a finite
    1e10 slope), so that layer of `a` is a constant of the check; gradients wrt the maps compared
    with it (and wrt `a`'s other layer, shared by both comparisons of a triplet) are checked.
    Every differentiated map is ReLU'd noise + 0.1: no all-zero vector where derivatives are taken."""
    feats = make_feats(2, GRAD_LAYERS, count, seed=20 + count, dtype=torch.float64, zero_positions=True)
    assert not feats[0][0][:, :, 0, 0].any()  # the zero vector is there
    weights = {k: [w.double() for w in ws] for k, ws in make_weights(GRAD_LAYERS, seed=count).items()}
    layers = len(GRAD_LAYERS)
    inputs = []
    for k, lst in enumerate(feats):
        for i, t in enumerate(lst):
            inputs.append(t.clone() if (k, i) == (0, 0) else (t + 0.1).requires_grad_())

    def op(*flat):
        out = pf.fused_distance(*(flat[k * layers : (k + 1) * layers] for k in range(count)), distances=(name,),
                                **weights, backend="auto")
        return tuple(terms[name] for terms in ([out] if count == 2 else out))

    values = op(*inputs)
    assert all(v.dtype == torch.float64 and v.requires_grad and bool((v > 0).all()) for v in values)
    assert torch.autograd.gradcheck(op, tuple(inputs), eps=1e-6, atol=1e-7)


def test_kernel_argument_errors_are_clear():
    a = torch.rand(1, 2, 2, 2)
    row = (a.data_ptr(), a.data_ptr(), 0, 8, 8, 0, 2, 4, 0, 0, False)
    out = torch.empty(5, 1, 1, 1)
    spatial, lpips, dists = (1 << _C.DISTANCE_SLOTS.index(name) for name in ("spatial", "lpips", "dists"))  # mask bits
    with pytest.raises(ValueError, match="count must be 2 \\(pair\\) or 3"):
        _C.fused_distance_cpu([row], 1, 4, spatial, "float32", out.data_ptr())
    with pytest.raises(ValueError, match="layer 0: channel count must be >= 1"):
        _C.fused_distance_cpu([row[:6] + (0, 4, 0, 0, False)], 1, 2, spatial, "float32", out.data_ptr())
    with pytest.raises(ValueError, match="layer 0: lpips weights is a null pointer"):
        _C.fused_distance_cpu([row], 1, 2, lpips, "float32", out.data_ptr())
    with pytest.raises(ValueError, match="layer 0: dists weights is a null pointer"):
        _C.fused_distance_cpu([row], 1, 2, dists, "float32", out.data_ptr())
    with pytest.raises(ValueError, match="element type must be float32, bfloat16 or float16"):
        _C.fused_distance_cpu([row], 1, 2, spatial, "float8", out.data_ptr())
    with pytest.raises(ValueError, match="the CPU kernel takes float32 or bfloat16 maps, not float16"):
        _C.fused_distance_cpu([row], 1, 2, spatial, "float16", out.data_ptr())
    with pytest.raises(ValueError, match="layer 0: map 1 is a null pointer"):
        _C.fused_distance_cpu([(a.data_ptr(), 0) + row[2:]], 1, 2, spatial, "float32", out.data_ptr())
