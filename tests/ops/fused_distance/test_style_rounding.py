"""How the Triton style kernel's Gram tiles are rounded, emulated bit for bit in numpy.

No GPU is needed to see the error a rounding choice gives: the kernel normalises each position in
float32 (``x * inv``), then multiplies tiles with ``tl.dot``. Rounding the normalised tiles to bf16
first (what the kernel once did for 16-bit maps) biases style by ~1/eps^2 for a feature change eps;
``tf32x3`` (each operand split into a round-to-nearest TF32 high part and a truncated TF32 low
part, three tensor-core products, float32 accumulation per 32-position block) stays at float32
accuracy. The kernel must use the precision these tests accept.
"""

import numpy as np
import pytest
from perceptual_fast.kernels.triton import fused_distance as K


def _bits(x):
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def tf32_nearest(x):
    """float32 -> nearest TF32 (10-bit mantissa), ties away from zero (PTX cvt.rna.tf32.f32)."""
    return ((_bits(x) + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def tf32_truncate(x):
    """float32 -> TF32 by dropping the low 13 bits (what the tensor core reads of a float32 register)."""
    return (_bits(x) & np.uint32(0xFFFFE000)).view(np.float32)


def bf16_nearest(x):
    """float32 -> nearest bfloat16, ties to even."""
    b = _bits(x)
    return ((b + np.uint32(0x7FFF) + ((b >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)).view(np.float32)


def gram(tile, precision, block_p=32):
    """``tile @ tile.T`` for a float32 ``[C, P]`` tile as tl.dot computes it with ``precision``:
    exact products of the rounded operands, float32 accumulation over ``block_p``-position steps."""
    acc = np.zeros((tile.shape[0],) * 2, np.float32)
    for p0 in range(0, tile.shape[1], block_p):
        x = tile[:, p0 : p0 + block_p]
        if precision == "ieee":
            part = x.astype(np.float64) @ x.T.astype(np.float64)
        elif precision == "bf16":
            y = bf16_nearest(x).astype(np.float64)
            part = y @ y.T
        elif precision == "tf32x3":
            hi = tf32_nearest(x)
            lo = tf32_truncate(x - hi).astype(np.float64)  # x - hi is exact in float32
            hi = hi.astype(np.float64)
            part = hi @ hi.T + hi @ lo.T + lo @ hi.T
        else:
            raise ValueError(precision)
        acc = (acc + part.astype(np.float32)).astype(np.float32)
    return acc.astype(np.float64)


def normalised_float32(x):
    """The kernel's per-position normalisation of a ``[C, P]`` map: float32 inverse norm, float32 product."""
    inv = np.float32(1) / (np.sqrt((x * x).sum(0, dtype=np.float32)) + np.float32(1e-10))
    return (x * inv).astype(np.float32)


def style(a, b, precision):
    """The style term of two ``[C, P]`` maps: float64 exact, or as the kernel computes it."""
    c, p = a.shape
    if precision == "exact":
        unit = lambda x: x / (np.sqrt((x * x).sum(0)) + 1e-10)  # noqa: E731
        ga, gb = unit(a.astype(np.float64)), unit(b.astype(np.float64))
        ga, gb = ga @ ga.T, gb @ gb.T
    else:
        ga, gb = gram(normalised_float32(a), precision), gram(normalised_float32(b), precision)
    return ((ga - gb) ** 2).sum() / (p * p * c * c)


def _bf16_maps(change, seed=0, shape=(64, 256)):
    """A ReLU bf16 map and a copy changed by ``change`` (relative, per element), both rounded to bf16."""
    rng = np.random.default_rng(seed)
    a = bf16_nearest(np.maximum(rng.standard_normal(shape), 0).astype(np.float32))
    b = bf16_nearest((a * (1 + change * rng.standard_normal(shape))).astype(np.float32))
    return a, b


@pytest.mark.parametrize("change", [0.5, 0.05, 0.01])
def test_tf32x3_gram_tiles_keep_style_at_float32_accuracy(change):
    a, b = _bf16_maps(change)
    exact = style(a, b, "exact")
    assert abs(style(a, b, "tf32x3") / exact - 1) < 5e-6
    assert abs(style(a, b, "ieee") / exact - 1) < 1e-5  # the float32 bound it matches


@pytest.mark.parametrize("change, at_least", [(0.05, 2e-3), (0.01, 2e-2)])
def test_bf16_gram_tiles_bias_style_for_small_changes(change, at_least):
    """The emulation sees the bias of bf16 tiles (here 0.25% at 5%, 9% at 1%): it can fail."""
    a, b = _bf16_maps(change)
    assert abs(style(a, b, "bf16") / style(a, b, "exact") - 1) > at_least


def test_the_style_kernel_uses_the_accepted_precision():
    assert K.STYLE_DOT_PRECISION == "tf32x3"
