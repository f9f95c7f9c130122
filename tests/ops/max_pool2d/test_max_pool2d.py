"""``max_pool2d`` (perceptual_fast/ops/max_pool2d, csrc/max_pool2d_cpu.cpp): every ISA variant this CPU
runs gives torch's ``max_pool2d`` values bit for bit (NaN, infinities, ties and signed zeros included)
and writes every output; everything the kernel does not take falls back to torch, with its reason."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from perceptual_fast import _C
from perceptual_fast.ops.inference import torch_ops_only
from perceptual_fast.ops.max_pool2d import cpp_reasons, max_pool2d, window_output_size

# (channels, height, width, kernel, stride, padding, ceil_mode): the trunks' pools and odd ones, with
# channel counts that leave tails after the variants' register blocks (16/32/64 channels).
CASES = [
    (64, 31, 31, 3, 2, 0, True),  # squeezenet1_1's first pool
    (96, 15, 15, 3, 2, 0, False),  # alexnet-like
    (64, 32, 32, 3, 2, 1, False),  # resnet's stem pool
    (128, 8, 8, 2, 2, 0, False),  # vgg16's
    (3, 7, 5, 3, 2, 1, True),
    (17, 9, 12, (3, 2), (2, 1), (1, 0), True),
    (80, 6, 11, 2, 3, 1, True),
    (130, 4, 4, 3, 1, 1, False),
    (1, 1, 1, 1, 1, 0, False),
]


def awkward_maps(n, c, h, w, seed):
    """channels_last float32 maps with ties, signed zeros, infinities and a few NaN."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, (n, c, h, w), generator=g).float() * 0.5  # many ties
    x[torch.rand(x.shape, generator=g) < 0.1] = -0.0
    x[torch.rand(x.shape, generator=g) < 0.02] = float("-inf")
    x[torch.rand(x.shape, generator=g) < 0.01] = float("inf")
    x[torch.rand(x.shape, generator=g) < 0.01] = float("nan")
    return x.contiguous(memory_format=torch.channels_last)


def assert_same_values(got, want):
    """Equal bit for bit up to NaN payloads: same NaN positions, same values and signs elsewhere."""
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    keep = ~torch.isnan(want)
    assert torch.equal(got[keep], want[keep])
    assert torch.equal(torch.signbit(got[keep]), torch.signbit(want[keep]))  # -0.0 where torch keeps -0.0


@pytest.mark.parametrize("case", CASES, ids=lambda c: "c{}_{}x{}_k{}_s{}_p{}_{}".format(*c[:6], "ceil" if c[6] else "floor"))
def test_every_variant_gives_torchs_values(variant, case, poisoned):
    c, h, w, k, s, p, ceil = case
    x = awkward_maps(3, c, h, w, seed=h * 100 + c)
    want = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
    n, _, out_h, out_w = want.shape
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    out = poisoned(n, out_h, out_w, c)  # NHWC memory, NaN where the kernel writes nothing
    _C.max_pool2d_cpu(x.data_ptr(), n, h, w, c, [*pair(k), *pair(s), *pair(p)], out.data_ptr(), out_h, out_w, 2)
    assert_same_values(out.permute(0, 3, 1, 2), want)
    got = max_pool2d(x, k, s, p, ceil)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert_same_values(got, want)


def test_output_size_is_torchs():
    for size in range(1, 40):
        for k, s, p in [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 3, 2), (2, 3, 1), (7, 2, 0)]:
            for ceil in (False, True):
                try:
                    want = F.max_pool2d(torch.zeros(1, 1, size, 1), (k, 1), (s, 1), (p, 0), ceil_mode=ceil).shape[2]
                except RuntimeError:  # torch: "Output size is too small"
                    want = 0
                assert window_output_size(size, k, s, p, 1, ceil) == want, (size, k, s, p, ceil)
    assert window_output_size(2, 3, 2, 0, 1, True) == 1  # a ceil_mode window may reach past a too-small input


def test_stride_defaults_to_the_kernel_and_pairs_may_be_one_long():
    x = awkward_maps(2, 20, 9, 8, seed=3)
    for args in [(3,), (3, None), ((3,), (2,)), ([2, 3], [1, 2], [1, 1])]:
        assert_same_values(max_pool2d(x, *args), F.max_pool2d(x, *args))
        assert cpp_reasons(x, *args) == []


def test_another_default_device_does_not_move_the_output():
    """Under a meta (or CUDA) default device the output still lands beside its CPU input."""
    x = awkward_maps(2, 20, 9, 8, seed=4)
    with torch.device("meta"):
        got = max_pool2d(x, 3, 2)
    assert got.device.type == "cpu"
    assert_same_values(got, F.max_pool2d(x, 3, 2))


def test_the_kernel_refuses_windows_torch_refuses():
    x = torch.rand(1, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    out = torch.empty(1, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="window torch's max_pool2d rejects"):
        _C.max_pool2d_cpu(x.data_ptr(), 1, 5, 5, 4, [3, 3, 2, 2, 2, 2], out.data_ptr(), 3, 3, 1)
    with pytest.raises(ValueError, match="starts past the input"):
        _C.max_pool2d_cpu(x.data_ptr(), 1, 5, 5, 4, [3, 3, 2, 2, 0, 0], out.data_ptr(), 4, 4, 1)
    with pytest.raises(RuntimeError, match="pad should be at most half"):  # the wrapper lets torch say why
        max_pool2d(x, 3, 2, 2)


@pytest.mark.parametrize("why", ["nchw", "float64", "bfloat16", "grad", "torch_ops_only", "dispatch_mode"])
def test_everything_else_runs_torchs_op_with_a_reason(why):
    x = awkward_maps(2, 24, 9, 9, seed=5)
    x = x.contiguous() if why == "nchw" else x.double() if why == "float64" else x.bfloat16() if why == "bfloat16" else x
    if why == "grad":
        x = x.nan_to_num(0.0, 1.0, -1.0).requires_grad_()
    ctx = torch_ops_only("max_pool2d") if why == "torch_ops_only" else FlopCounterMode(display=False) \
        if why == "dispatch_mode" else torch.no_grad() if why != "grad" else torch.enable_grad()
    with ctx:
        reasons = cpp_reasons(x, 3, 2, 0)
        got = max_pool2d(x, 3, 2, 0, True)
    assert reasons, why
    want = F.max_pool2d(x, 3, 2, 0, ceil_mode=True)
    assert_same_values(got.detach(), want.detach())
    assert got.is_contiguous(memory_format=torch.channels_last) == want.is_contiguous(memory_format=torch.channels_last)
    if why == "grad":
        got.sum().backward()
        assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_a_cpu_channels_last_float32_map_takes_the_kernel():
    x = awkward_maps(2, 24, 9, 9, seed=6)
    assert cpp_reasons(x, 3, 2, 0) == []
    with torch.no_grad():
        assert cpp_reasons(x.requires_grad_(), 3, 2, 0) == []  # needs no gradient under no_grad
