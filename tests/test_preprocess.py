"""Input validation: every problem is a ValueError that names it and the fix."""

import warnings

import pytest
import torch

import perceptual_fast as pf
from perceptual_fast.preprocess import check_images, lpips_scaling, scaled_batch


@pytest.fixture(scope="module")
def scorer():
    return pf.Scorer("alexnet", weights="random", distances=("spatial",))


def img(*shape, lo=-1.0, hi=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(shape, generator=g)


@pytest.mark.parametrize(
    "x0,x1,message",
    [
        (img(3, 64, 64), img(3, 64, 64), r"must have 4 dimensions \[N, 3, H, W\]; got 3.*unsqueeze\(0\)"),
        (img(2, 1, 64, 64), img(2, 1, 64, 64), r"3 colour channels.*grayscale: repeat the channel"),
        (img(2, 64, 64, 3), img(2, 64, 64, 3), r"3 colour channels.*NHWC data: permute"),
        (img(2, 3, 64, 64), img(2, 3, 64, 48), r"x0 \(2, 3, 64, 64\) and x1 \(2, 3, 64, 48\) must have the same shape"),
        (img(2, 3, 64, 64), img(3, 3, 64, 64), r"must have the same shape"),
        (img(2, 3, 24, 64), img(2, 3, 24, 64), r"24x64 pixels, too small for this trunk's taps: it needs at least 31x31"),
        (img(2, 3, 64, 64, lo=0, hi=255), img(2, 3, 64, 64), r"x0 values span \[.*\], outside the expected \[-1, 1\].*input_range='0,255'"),
        (img(0, 3, 64, 64), img(0, 3, 64, 64), r"empty batch"),
        ([[1.0]], img(2, 3, 64, 64), r"must be a torch.Tensor"),
        (img(2, 3, 64, 64).to(torch.int32), img(2, 3, 64, 64), r"dtype torch.int32; give uint8"),
    ],
)
def test_bad_images_raise_clear_errors(scorer, x0, x1, message):
    with pytest.raises(ValueError, match=message):
        scorer.distance(x0, x1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_rejected(scorer, bad):
    x = img(2, 3, 64, 64)
    x[1, 2, 5, 7] = bad
    with pytest.raises(ValueError, match="x1 contains NaN or infinite values"):
        scorer.distance(img(2, 3, 64, 64), x)


def test_zero_one_images_warn_and_opt_in_converts():
    x = img(2, 3, 64, 64, lo=0, hi=1)
    with pytest.warns(UserWarning, match=r"every value is >= 0.*input_range='0,1'"):
        assert check_images(x) == (-1.0, 1.0)
    assert check_images(x, input_range="0,1") == (0.0, 1.0)
    scaled = scaled_batch([(x, (0.0, 1.0))], torch.float32, torch.device("cpu"))
    torch.testing.assert_close(scaled, lpips_scaling(2 * x - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_images(x, input_range="-1,1")  # explicitly the LPIPS convention: no warning


def test_uint8_and_0_255_floats_equal_the_minus1_1_path(scorer):
    u0 = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    u1 = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    want = scorer.distance(u0.float() / 127.5 - 1, u1.float() / 127.5 - 1)["spatial"]
    torch.testing.assert_close(scorer.distance(u0, u1)["spatial"], want)
    s255 = pf.Scorer("alexnet", weights="random", input_range="0,255")
    torch.testing.assert_close(s255.distance(u0.float(), u1.float())["spatial"], want, rtol=1e-5, atol=1e-6)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="input_range '0-1' is not one of"):
        pf.Scorer("alexnet", weights="random", input_range="0-1")
    with pytest.raises(ValueError, match="precision 'fp8' is not supported; choose one of auto, fp32, fp64"):
        pf.Scorer("alexnet", weights="random", precision="fp8")
    with pytest.raises(ValueError, match="unknown trunk 'alexnett'; available: alexnet, squeezenet1_1, vgg16"):
        pf.Scorer("alexnett", weights="random")
    with pytest.raises(ValueError, match="backend='fast' is not a backend"):
        pf.Scorer("alexnet", weights="random", backend="fast")


def test_judge_is_checked(scorer):
    x = img(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"one value per triplet \(2\)"):
        scorer.score({"ref": x, "p0": x, "p1": x, "judge": torch.rand(3)})
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\]"):
        scorer.score({"ref": x, "p0": x, "p1": x, "judge": torch.tensor([0.5, 1.5])})
    with pytest.raises(ValueError, match=r"batch is missing \['p1'\]"):
        scorer.score({"ref": x, "p0": x})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scaled_batch_is_one_affine_pass_equal_to_unit_range_then_scaling(dtype):
    u8 = torch.randint(0, 256, (2, 3, 9, 7), dtype=torch.uint8)
    f01 = img(3, 3, 9, 7, lo=0, hi=1, seed=1).to(dtype)
    fpm = img(1, 3, 9, 7, seed=2).to(dtype)
    items = [(u8, None), (f01, "0,1"), (fpm, None)]
    batches = [(x, check_images(x, input_range=r)) for x, r in items]
    fast = scaled_batch(batches, dtype, torch.device("cpu"))
    # In two steps, in float64: to [-1, 1] from each convention, then LPIPS's scaling layer.
    unit = [u8.double() / 127.5 - 1, 2 * f01.double() - 1, fpm.double()]
    want = torch.cat([lpips_scaling(u) for u in unit])
    assert fast.shape == (6, 3, 9, 7) and fast.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(fast.double(), want, rtol=tol, atol=tol)
    # The differentiable path (taken when an input requires grad) gives the same values, bit for bit.
    grad_items = [(x.double().requires_grad_() if x.is_floating_point() else x, r) for x, r in batches]
    slow = scaled_batch(grad_items, dtype, torch.device("cpu"))
    assert slow.requires_grad and slow.dtype == dtype and slow.shape == fast.shape
    # float32 too: the float64 copies of float32 images cast back exactly, then the same addcmul runs.
    assert torch.equal(slow.detach(), fast)
    torch.testing.assert_close(slow.detach().double(), want, rtol=tol, atol=tol)  # and independently of `fast`


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_the_one_pass_kernel_equals_torch_bit_for_bit(dtype, memory_format):
    """csrc/scale_images_cpu.cpp (cast, affine and layout in one pass) against torch's ``x.float() * alpha + beta``:
    into a NaN-poisoned output, images whose pixel counts leave tails after 4-pixel groups (5x7, 13x29) and
    span several work items (40x37 = 1480 pixels), and through ``scaled_batch``, against its autograd path."""
    from perceptual_fast import _C

    g = torch.Generator().manual_seed(3)
    alpha, beta = torch.rand(3, generator=g) + 0.5, torch.rand(3, generator=g) - 0.5
    channels_last = memory_format == torch.channels_last
    for n, h, w in ((1, 5, 7), (3, 13, 29), (2, 40, 37)):
        x = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8) if dtype == torch.uint8 else \
            img(n, 3, h, w, seed=h)
        out = torch.full((n, 3, h, w), float("nan")).contiguous(memory_format=memory_format)
        _C.scale_images_cpu(x.data_ptr(), "uint8" if dtype == torch.uint8 else "float32", n, h * w, alpha.data_ptr(),
                            beta.data_ptr(), out.data_ptr(), channels_last, 2)
        assert torch.equal(out, x.float() * alpha.view(1, 3, 1, 1) + beta.view(1, 3, 1, 1)), (n, h, w)
    lo_hi = (0.0, 255.0) if dtype == torch.uint8 else (-1.0, 1.0)
    batches = [(x, lo_hi) for x in (
        (torch.randint(0, 256, (k, 3, 40, 37), generator=g, dtype=torch.uint8) if dtype == torch.uint8 else img(k, 3, 40, 37, seed=k))
        for k in (2, 3))]
    fast = scaled_batch(batches, torch.float32, torch.device("cpu"), memory_format)
    assert fast.is_contiguous(memory_format=memory_format)
    slow = scaled_batch([(x.float().requires_grad_(), r) for x, r in batches], torch.float32, torch.device("cpu"), memory_format)
    assert torch.equal(fast, slow.detach())
    # images the kernel does not take (non-contiguous: channels_last input) go through torch, same values
    strided = scaled_batch([(x.contiguous(memory_format=torch.channels_last), r) for x, r in batches], torch.float32,
                           torch.device("cpu"), memory_format)
    assert torch.equal(strided, fast)
    with pytest.raises(ValueError, match="element must be 'uint8' or 'float32', got 'int8'"):
        _C.scale_images_cpu(x.data_ptr(), "int8", 1, 4, alpha.data_ptr(), beta.data_ptr(), out.data_ptr(), False)
