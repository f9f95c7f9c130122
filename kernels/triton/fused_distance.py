"""The fused distance op in Triton: device code only (the launcher is perceptual_fast/backends/
triton_backend.py). Every distance, every layer, pairs and triplets, in three launches whatever
the number of layers.

Layers live in different tensors; each launch gets one base pointer and per-layer element
offsets from it (a small int64 table), plus a work list: the pointwise kernel runs over
(tile of positions of a layer) x sample, the style kernel over (upper-triangle channel block
pair of a layer) x sample, the meanpool kernel over layer x sample. The sample is grid axis 1
(at most ``MAX_SAMPLES_PER_LAUNCH``; the launcher splits bigger batches) and every offset that
involves it is int64, so expanded or very large maps cannot wrap at 2^31.

1. ``_pointwise_kernel``: per-position channel norms, the spatial / lpips terms (difference of
   normalised vectors; compiled without FMA contraction, ``LAUNCH_OPTIONS``, so equal maps give
   exactly 0)
   into ``terms`` ``[2 (spatial, lpips), count - 1, N, L]`` and, for style, the inverse norms per
   position ``inv`` ``[count, N, sum HW]``. The reference is read once for a triplet.
2. ``_style_kernel``: Gram differences through ``tl.dot`` tiles: for a block pair (I, J) it
   accumulates Ga[I, J] and Gx[I, J] over positions (normalising on the fly) and adds
   sum((Ga - Gx)^2), times 2 off the diagonal, to ``style`` ``[count - 1, N, L]``. No Gram matrix
   is stored. Tiles stay float32 whatever the input dtype, multiplied with
   ``input_precision="tf32x3"`` (three TF32 tensor-core products of split operands, about float32
   accuracy): rounding the normalised tiles to bf16 instead biases style by ~1/eps^2 for a
   feature change eps (emulated in tests/ops/fused_distance/test_style_rounding.py, C=64, 256 positions: 0.25% at
   5%, 9% at 1%; tf32x3 stays under 2e-6 like plain float32).
3. ``_meanpool_kernel``: the channel sums of every map in one fixed order (no atomics, so equal
   maps give exactly 0; float32 within a tile, float64 across tiles into ``chsum`` ``[count, N,
   sum C]``), then the normalised means and the squared difference in float64 into ``meanpool``
   ``[count - 1, N, L]``; compiled without FMA contraction like the pointwise kernel.

Inputs: float32, bfloat16 or float16 maps whose samples are NCHW-contiguous (any batch stride,
0 included); all arithmetic in float32, except meanpool's sums across tiles and its last steps.
spatial / lpips / style accumulate with atomics: the summation order on a GPU is not fixed, so their
last bits may vary from run to run.

This module imports only triton (no torch), so ``aot.py`` beside it can compile every kernel for
a GPU target on a machine with nothing but triton installed. Under ``TRITON_INTERPRET=1`` the
kernels run on CPU tensors (slowly, with the smaller interpreter blocks): that is how CI runs
them; ``aot.py`` is how CI checks that they compile for a GPU.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

MAX_SAMPLES_PER_LAUNCH = 65535
"""CUDA's limit on grid axis 1, where the sample index runs."""

GPU_BLOCKS = dict(POINTWISE_BLOCK_P=128, CHANNEL_BLOCK=32, STYLE_BLOCK_C=64, STYLE_BLOCK_P=32)
"""Block sizes on a GPU (the work lists are built from them, so they are fixed per mode)."""
INTERPRETER_BLOCKS = dict(POINTWISE_BLOCK_P=16, CHANNEL_BLOCK=16, STYLE_BLOCK_C=16, STYLE_BLOCK_P=16)
"""Smaller blocks under TRITON_INTERPRET=1, so small test shapes still span several blocks."""

GPU_WARP_CONFIGS = [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3)]
"""What the autotuner may pick from (warps and stages only), built without touching a device."""

STYLE_DOT_PRECISION = "tf32x3"
"""tl.dot input precision of the float32 Gram tiles (see the module docstring)."""

LAUNCH_OPTIONS = {
    # a * ia - b * ib and ma * scale_a - mx * scale_x must not become FMAs: equal maps give exactly 0
    "_pointwise_kernel": dict(enable_fp_fusion=False),
    "_meanpool_kernel": dict(enable_fp_fusion=False),
    "_style_kernel": dict(),  # Ga and Gx accumulate alike, so FMAs keep equal maps exactly equal
}
"""Compiler options each kernel is launched with (the launcher and aot.py both read them)."""


def interpreting() -> bool:
    """True under TRITON_INTERPRET=1 (kernels run as Python on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


BLOCKS = INTERPRETER_BLOCKS if interpreting() else GPU_BLOCKS
_WARP_CONFIGS = [triton.Config({}, num_warps=4, num_stages=2)] if interpreting() else GPU_WARP_CONFIGS


@triton.jit
def _map_ptr(base, map_off, map_stride, k, layer, n, L):
    """Pointer to sample ``n`` (int64) of map ``k`` (0 = reference) of ``layer``: one base pointer plus
    the per-layer element offset and batch stride from the host's int64 tables."""
    return base + tl.load(map_off + k * L + layer) + n * tl.load(map_stride + k * L + layer)


@triton.jit
def _tile(ptr, offs, mask):
    """A masked [BLOCK_C, BLOCK_P] tile of a map, as float32 (zeros outside the map)."""
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


# reset_to_zero: the autotuner's trial runs must not leave their atomic sums behind. Each kernel
# accumulates into a buffer of its own, so one kernel's trials never wipe another's results.
@triton.autotune(configs=_WARP_CONFIGS, key=["COUNT", "TOTAL_HW"], reset_to_zero=["terms"])
@triton.jit
def _pointwise_kernel(
    base, map_off, map_stride, chans, hws, pos_off, lin, lin_off, tile_layer, tile_p0,
    inv, terms, N, L, TOTAL_HW,
    COUNT: tl.constexpr, WANT_TERMS: tl.constexpr, WANT_STYLE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    t = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    layer = tl.load(tile_layer + t)
    C = tl.load(chans + layer)
    HW = tl.load(hws + layer)
    p = tl.load(tile_p0 + t) + tl.arange(0, BLOCK_P)
    pmask = p < HW
    a_ptr = _map_ptr(base, map_off, map_stride, 0, layer, n, L)
    b_ptr = _map_ptr(base, map_off, map_stride, 1, layer, n, L)
    c_ptr = _map_ptr(base, map_off, map_stride, 2, layer, n, L)

    ssa = tl.zeros([BLOCK_P], dtype=tl.float32)
    ssb = tl.zeros([BLOCK_P], dtype=tl.float32)
    ssc = tl.zeros([BLOCK_P], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        cmask = cc < C
        offs = cc[:, None] * HW + p[None, :]
        m = cmask[:, None] & pmask[None, :]
        xa = _tile(a_ptr, offs, m)
        xb = _tile(b_ptr, offs, m)
        ssa += tl.sum(xa * xa, axis=0)
        ssb += tl.sum(xb * xb, axis=0)
        if COUNT == 3:
            xc = _tile(c_ptr, offs, m)
            ssc += tl.sum(xc * xc, axis=0)
    ia = 1.0 / (tl.sqrt(ssa) + 1e-10)
    ib = 1.0 / (tl.sqrt(ssb) + 1e-10)
    ic = 1.0 / (tl.sqrt(ssc) + 1e-10)
    if WANT_STYLE:
        poff = tl.load(pos_off + layer)
        tl.store(inv + n * TOTAL_HW + poff + p, ia, mask=pmask)
        tl.store(inv + (N + n) * TOTAL_HW + poff + p, ib, mask=pmask)
        if COUNT == 3:
            tl.store(inv + (2 * N + n) * TOTAL_HW + poff + p, ic, mask=pmask)
    if WANT_TERMS:
        loff = tl.load(lin_off + layer)
        sp_b = tl.zeros([BLOCK_P], dtype=tl.float32)
        lp_b = tl.zeros([BLOCK_P], dtype=tl.float32)
        sp_c = tl.zeros([BLOCK_P], dtype=tl.float32)
        lp_c = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            cmask = cc < C
            offs = cc[:, None] * HW + p[None, :]
            m = cmask[:, None] & pmask[None, :]
            w = tl.load(lin + loff + cc, mask=cmask, other=0.0)[:, None]
            na = _tile(a_ptr, offs, m) * ia[None, :]
            db = na - _tile(b_ptr, offs, m) * ib[None, :]
            sp_b += tl.sum(db * db, axis=0)
            lp_b += tl.sum(w * db * db, axis=0)
            if COUNT == 3:
                dc = na - _tile(c_ptr, offs, m) * ic[None, :]
                sp_c += tl.sum(dc * dc, axis=0)
                lp_c += tl.sum(w * dc * dc, axis=0)
        # terms: [2, COUNT - 1, N, L], spatial then lpips.
        pairs = COUNT - 1
        hw = HW.to(tl.float32)
        tl.atomic_add(terms + n * L + layer, tl.sum(sp_b, axis=0) / hw)
        tl.atomic_add(terms + (pairs * N + n) * L + layer, tl.sum(lp_b, axis=0) / hw)
        if COUNT == 3:
            tl.atomic_add(terms + (N + n) * L + layer, tl.sum(sp_c, axis=0) / hw)
            tl.atomic_add(terms + (3 * N + n) * L + layer, tl.sum(lp_c, axis=0) / hw)


@triton.jit
def _gram_tile(ptr, inv_p, rows, p, rmask, pmask, HW):
    """Rows ``rows`` x positions ``p`` of a map, normalised per position: float32 [BLOCK_C, BLOCK_P]."""
    x = tl.load(ptr + rows[:, None] * HW + p[None, :], mask=rmask[:, None] & pmask[None, :], other=0.0).to(tl.float32)
    return x * inv_p[None, :]


@triton.autotune(configs=_WARP_CONFIGS, key=["COUNT", "TOTAL_HW"], reset_to_zero=["style"])
@triton.jit
def _style_kernel(
    base, map_off, map_stride, chans, hws, pos_off, blk_layer, blk_i0, blk_j0, inv, style, N, L, TOTAL_HW,
    COUNT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    layer = tl.load(blk_layer + b)
    C = tl.load(chans + layer)
    HW = tl.load(hws + layer)
    poff = tl.load(pos_off + layer)
    i0 = tl.load(blk_i0 + b)
    j0 = tl.load(blk_j0 + b)
    ri = i0 + tl.arange(0, BLOCK_C)
    rj = j0 + tl.arange(0, BLOCK_C)
    mi = ri < C
    mj = rj < C
    a_ptr = _map_ptr(base, map_off, map_stride, 0, layer, n, L)
    b_ptr = _map_ptr(base, map_off, map_stride, 1, layer, n, L)
    c_ptr = _map_ptr(base, map_off, map_stride, 2, layer, n, L)
    ga = tl.zeros([BLOCK_C, BLOCK_C], dtype=tl.float32)
    gb = tl.zeros([BLOCK_C, BLOCK_C], dtype=tl.float32)
    gc = tl.zeros([BLOCK_C, BLOCK_C], dtype=tl.float32)
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < HW
        inv_a = tl.load(inv + n * TOTAL_HW + poff + p, mask=pmask, other=0.0)
        inv_b = tl.load(inv + (N + n) * TOTAL_HW + poff + p, mask=pmask, other=0.0)
        ga += tl.dot(_gram_tile(a_ptr, inv_a, ri, p, mi, pmask, HW),
                     tl.trans(_gram_tile(a_ptr, inv_a, rj, p, mj, pmask, HW)), input_precision=PRECISION)
        gb += tl.dot(_gram_tile(b_ptr, inv_b, ri, p, mi, pmask, HW),
                     tl.trans(_gram_tile(b_ptr, inv_b, rj, p, mj, pmask, HW)), input_precision=PRECISION)
        if COUNT == 3:
            inv_c = tl.load(inv + (2 * N + n) * TOTAL_HW + poff + p, mask=pmask, other=0.0)
            gc += tl.dot(_gram_tile(c_ptr, inv_c, ri, p, mi, pmask, HW),
                         tl.trans(_gram_tile(c_ptr, inv_c, rj, p, mj, pmask, HW)), input_precision=PRECISION)
    hw = HW.to(tl.float32)
    c = C.to(tl.float32)
    scale = tl.where(i0 == j0, 1.0, 2.0) / (hw * hw * c * c)
    db = ga - gb
    tl.atomic_add(style + n * L + layer, tl.sum(tl.sum(db * db, axis=1), axis=0) * scale)
    if COUNT == 3:
        dc = ga - gc
        tl.atomic_add(style + (N + n) * L + layer, tl.sum(tl.sum(dc * dc, axis=1), axis=0) * scale)


@triton.jit
def _meanpool_kernel(
    base, map_off, map_stride, chans, hws, chan_off, chsum, meanpool, N, L, TOTAL_C,
    COUNT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # One program per (layer, sample) computes every map's channel sums in the same fixed order
    # (no atomics), so equal maps give bitwise equal means and the term is exactly 0.
    layer = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    C = tl.load(chans + layer)
    HW = tl.load(hws + layer)
    coff = tl.load(chan_off + layer)
    for k in tl.static_range(COUNT):
        ptr = _map_ptr(base, map_off, map_stride, k, layer, n, L)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            acc = tl.zeros([BLOCK_C], dtype=tl.float64)
            for p0 in range(0, HW, BLOCK_P):
                p = p0 + tl.arange(0, BLOCK_P)
                m = (cc < C)[:, None] & (p < HW)[None, :]
                tile = tl.load(ptr + cc[:, None] * HW + p[None, :], mask=m, other=0.0).to(tl.float32)
                acc += tl.sum(tile, axis=1).to(tl.float64)  # float32 within a tile, float64 across tiles
            tl.store(chsum + (k * N + n) * TOTAL_C + coff + cc, acc, mask=cc < C)
    tl.debug_barrier()  # the sums are read back below by other threads of this program
    # Means, norms and the difference in float64: the term is a small difference of two unit
    # vectors, which float32 sums over many positions would blur (as on the CPU).
    hw = HW.to(tl.float64)
    for q in tl.static_range(COUNT - 1):
        sa = tl.zeros([BLOCK_C], dtype=tl.float64)
        sx = tl.zeros([BLOCK_C], dtype=tl.float64)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            ma = tl.load(chsum + n * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
            mx = tl.load(chsum + ((q + 1) * N + n) * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
            sa += ma * ma
            sx += mx * mx
        scale_a = 1.0 / (tl.sqrt(tl.sum(sa, axis=0)) + 1e-10)
        scale_x = 1.0 / (tl.sqrt(tl.sum(sx, axis=0)) + 1e-10)
        acc = tl.zeros([BLOCK_C], dtype=tl.float64)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            ma = tl.load(chsum + n * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
            mx = tl.load(chsum + ((q + 1) * N + n) * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
            d = ma * scale_a - mx * scale_x
            acc += d * d
        tl.store(meanpool + (q * N + n) * L + layer, (tl.sum(acc, axis=0) / C.to(tl.float64)).to(tl.float32))
