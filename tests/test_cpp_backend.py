"""The `cpp` backend (perceptual_fast._C) against the float64 reference."""

import pytest
import torch

from perceptual_fast import _C
from perceptual_fast import distances as D
from perceptual_fast.backends.cpp import spatial_term_cpp

# (N, C, H, W): odd channel counts, 17x23 and 1x1 maps, batch 1, maps larger than one tile.
SHAPES = [(1, 3, 17, 23), (5, 64, 15, 15), (2, 7, 1, 1), (1, 1, 4, 4), (3, 384, 3, 3), (2, 16, 41, 37), (64, 192, 7, 7)]


def _pair(shape, seed, zero_positions=False):
    g = torch.Generator().manual_seed(seed)
    y0 = torch.relu(torch.randn(shape, generator=g))
    y1 = torch.relu(y0 + 0.3 * torch.randn(shape, generator=g))
    if zero_positions:
        y0[:, :, 0, 0] = 0.0
        y1[..., -1, -1] = 0.0
    return y0, y1


def _reference(y0, y1, w=None):
    return D.spatial_term(y0.double(), y1.double(), None if w is None else w.double())


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "mixed", "strided"])
@pytest.mark.parametrize("shape", SHAPES)
def test_cpp_equals_reference(shape, layout, weighted):
    y0, y1 = _pair(shape, seed=shape[1] * 31 + shape[2], zero_positions=True)
    w = torch.rand(shape[1]) if weighted else None
    want = _reference(y0, y1, w)
    if layout == "channels_last":
        y0, y1 = y0.to(memory_format=torch.channels_last), y1.to(memory_format=torch.channels_last)
    elif layout == "mixed":
        y1 = y1.to(memory_format=torch.channels_last)
    elif layout == "strided":  # a non-contiguous view: the wrapper must copy, not misread
        y0 = torch.cat([y0, y0], dim=3)[..., : shape[3]]
    got = spatial_term_cpp(y0, y1, w)
    assert got.dtype == torch.float32 and got.shape == (shape[0],)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


def test_kernel_writes_every_output_into_a_poisoned_buffer(poisoned):
    y0, y1 = _pair((7, 13, 9, 11), seed=5)
    out = poisoned(7)
    _C.spatial_term_f32(y0.data_ptr(), y1.data_ptr(), 0, out.data_ptr(), 7, 13, 99, y0.stride(0), y1.stride(0), y0.stride(1), 1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), _reference(y0, y1), rtol=1e-5, atol=0)


def test_identical_inputs_give_zero():
    y0, _ = _pair((3, 32, 10, 10), seed=1)
    assert torch.equal(spatial_term_cpp(y0, y0.clone()), torch.zeros(3))


def test_result_does_not_depend_on_thread_count():
    """Tiles are summed in a fixed order, so the answer is bitwise repeatable."""
    y0, y1 = _pair((2, 64, 40, 40), seed=9)
    first = spatial_term_cpp(y0, y1)
    for _ in range(3):
        assert torch.equal(spatial_term_cpp(y0, y1), first)


def test_layout_errors_are_clear():
    with pytest.raises(ValueError, match="channel count must be >= 1"):
        _C.spatial_term_f32(8, 8, 0, 8, 1, 0, 4, 0, 0, 4, 1)
    with pytest.raises(ValueError, match="NCHW-contiguous .* or channels_last"):
        _C.spatial_term_f32(8, 8, 0, 8, 1, 2, 4, 8, 8, 3, 2)
    with pytest.raises(ValueError, match="null pointer"):
        _C.spatial_term_f32(0, 8, 0, 8, 1, 2, 4, 8, 8, 4, 1)
    with pytest.raises(ValueError, match="float32 CPU tensors"):
        spatial_term_cpp(torch.rand(1, 2, 3, 3, dtype=torch.float64), torch.rand(1, 2, 3, 3, dtype=torch.float64))
