"""The fused distance op in Triton: device code only (the launcher is perceptual_fast/ops/
fused_distance/triton.py). Every distance, every layer, pairs and triplets, in one launch per kind
of work (at most four) whatever the number of layers.

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
4. ``_dists_kernel`` over layer x sample: per block of channels, the sums of y and y^2 of every map
   and of (a - x)^2 of every comparison over the positions, in float64 (a variance is E[y^2] - E[y]^2:
   float32 sums would expose its cancellation on flat channels), then DISTS's layer term in the
   difference form (``1 - S1 = (ma - mx)^2 / (ma^2 + mx^2 + c1)``, ``1 - S2 = var(a - x) / (va + vx +
   c2)``) into ``dists`` ``[count - 1, N, L]``. No atomics: equal maps give exactly 0.

Backward (lpips, spatial, meanpool; float32 maps): ``_meanpool_backward_kernel`` over layer x
sample gives each map's gradient with respect to its channel means (float64 math, spread over the
positions: d/dm / HW), then ``_pointwise_backward_kernel`` over the forward's position tiles
recomputes the norms and writes every wanted map's gradient (spatial / lpips plus the spread).
Style's gradient is the caller's (autograd of the reference).

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

GPU_BLOCKS = dict(POINTWISE_BLOCK_P=128, CHANNEL_BLOCK=32, STYLE_BLOCK_C=64, STYLE_BLOCK_P=32, DISTS_BLOCK_P=128)
"""Block sizes on a GPU (the work lists are built from them, so they are fixed per mode)."""
INTERPRETER_BLOCKS = dict(POINTWISE_BLOCK_P=16, CHANNEL_BLOCK=16, STYLE_BLOCK_C=16, STYLE_BLOCK_P=16, DISTS_BLOCK_P=64)
"""Smaller blocks under TRITON_INTERPRET=1, so small test shapes still span several blocks (dists's
position loop, interpreted, costs per step: 64 positions still give the tests' maps 2 to 7 steps)."""

GPU_WARP_CONFIGS = [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3)]
"""What the autotuner may pick from (warps and stages only), built without touching a device."""

STYLE_DOT_PRECISION = "tf32x3"
"""tl.dot input precision of the float32 Gram tiles (see the module docstring)."""

LAUNCH_OPTIONS = {
    # a * ia - b * ib and ma * scale_a - mx * scale_x must not become FMAs: equal maps give exactly 0
    "_pointwise_kernel": dict(enable_fp_fusion=False),
    "_meanpool_kernel": dict(enable_fp_fusion=False),
    "_dists_kernel": dict(),  # equal maps give 0 through (a - x)^2 and ma - mx, contracted or not
    "_style_kernel": dict(),  # Ga and Gx accumulate alike, so FMAs keep equal maps exactly equal
    # equal maps must give an exactly zero gradient, as in the forward
    "_pointwise_backward_kernel": dict(enable_fp_fusion=False),
    "_meanpool_backward_kernel": dict(enable_fp_fusion=False),
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
def _position_tile(base, map_off, map_stride, chans, hws, tile_layer, tile_p0, L, BLOCK_P: tl.constexpr):
    """What a program over (tile of positions of a layer) x sample starts from: the sample n (int64),
    the layer, its C and HW, the tile's positions p and their mask, and the three maps' sample pointers."""
    t = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    layer = tl.load(tile_layer + t)
    C = tl.load(chans + layer)
    HW = tl.load(hws + layer)
    p = tl.load(tile_p0 + t) + tl.arange(0, BLOCK_P)
    a_ptr = _map_ptr(base, map_off, map_stride, 0, layer, n, L)
    b_ptr = _map_ptr(base, map_off, map_stride, 1, layer, n, L)
    c_ptr = _map_ptr(base, map_off, map_stride, 2, layer, n, L)
    return n, layer, C, HW, p, p < HW, a_ptr, b_ptr, c_ptr


@triton.jit
def _tile(ptr, offs, mask):
    """A masked [BLOCK_C, BLOCK_P] tile of a map, as float32 (zeros outside the map)."""
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _position_norms(a_ptr, b_ptr, c_ptr, C, HW, p, pmask, COUNT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """The channel norms |y| of the maps a, b (and c for a triplet; else zeros) at positions ``p``: float32 [BLOCK_P] each."""
    ssa = tl.zeros([BLOCK_P], dtype=tl.float32)
    ssb = tl.zeros([BLOCK_P], dtype=tl.float32)
    ssc = tl.zeros([BLOCK_P], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        offs = cc[:, None] * HW + p[None, :]
        m = (cc < C)[:, None] & pmask[None, :]
        xa = _tile(a_ptr, offs, m)
        xb = _tile(b_ptr, offs, m)
        ssa += tl.sum(xa * xa, axis=0)
        ssb += tl.sum(xb * xb, axis=0)
        if COUNT == 3:
            xc = _tile(c_ptr, offs, m)
            ssc += tl.sum(xc * xc, axis=0)
    return tl.sqrt(ssa), tl.sqrt(ssb), tl.sqrt(ssc)


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
    n, layer, C, HW, p, pmask, a_ptr, b_ptr, c_ptr = _position_tile(
        base, map_off, map_stride, chans, hws, tile_layer, tile_p0, L, BLOCK_P)

    norm_a, norm_b, norm_c = _position_norms(a_ptr, b_ptr, c_ptr, C, HW, p, pmask, COUNT, BLOCK_P, BLOCK_C)
    ia = 1.0 / (norm_a + 1e-10)
    ib = 1.0 / (norm_b + 1e-10)
    ic = 1.0 / (norm_c + 1e-10)
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
def _channel_sums(base, map_off, map_stride, layer, n, L, C, HW, chsum, N, TOTAL_C,
                  COUNT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Every map's channel sums of (layer, sample n) into ``chsum + (k * N + n) * TOTAL_C + c`` (``chsum``
    already offset to the layer's channels): in one fixed order for every map (no atomics), float32
    within a tile, float64 across tiles; ends with a barrier, so the program may read them back."""
    for k in tl.static_range(COUNT):
        ptr = _map_ptr(base, map_off, map_stride, k, layer, n, L)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            acc = tl.zeros([BLOCK_C], dtype=tl.float64)
            for p0 in range(0, HW, BLOCK_P):
                p = p0 + tl.arange(0, BLOCK_P)
                m = (cc < C)[:, None] & (p < HW)[None, :]
                tile = tl.load(ptr + cc[:, None] * HW + p[None, :], mask=m, other=0.0).to(tl.float32)
                acc += tl.sum(tile, axis=1).to(tl.float64)
            tl.store(chsum + (k * N + n) * TOTAL_C + cc, acc, mask=cc < C)
    tl.debug_barrier()  # the sums are read back by other threads of the calling program


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
    _channel_sums(base, map_off, map_stride, layer, n, L, C, HW, chsum + coff, N, TOTAL_C, COUNT, BLOCK_C, BLOCK_P)
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


@triton.jit
def _dists_kernel(
    base, map_off, map_stride, chans, hws, chan_off, weights, dists, N, L,
    COUNT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # One program per (layer, sample); weights: every layer's [2, C] (alpha; beta) concatenated.
    layer = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    C = tl.load(chans + layer)
    HW = tl.load(hws + layer)
    w_ptr = weights + 2 * tl.load(chan_off + layer)
    a_ptr = _map_ptr(base, map_off, map_stride, 0, layer, n, L)
    b_ptr = _map_ptr(base, map_off, map_stride, 1, layer, n, L)
    c_ptr = _map_ptr(base, map_off, map_stride, 2, layer, n, L)
    hw = HW.to(tl.float64)
    term_b = tl.zeros([BLOCK_C], dtype=tl.float64)
    term_c = tl.zeros([BLOCK_C], dtype=tl.float64)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        sa = tl.zeros([BLOCK_C], dtype=tl.float64)
        qa = tl.zeros([BLOCK_C], dtype=tl.float64)
        sb = tl.zeros([BLOCK_C], dtype=tl.float64)
        qb = tl.zeros([BLOCK_C], dtype=tl.float64)
        db = tl.zeros([BLOCK_C], dtype=tl.float64)
        sc = tl.zeros([BLOCK_C], dtype=tl.float64)
        qc = tl.zeros([BLOCK_C], dtype=tl.float64)
        dc = tl.zeros([BLOCK_C], dtype=tl.float64)
        for p0 in range(0, HW, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            m = (cc < C)[:, None] & (p < HW)[None, :]
            offs = cc[:, None] * HW + p[None, :]
            a = _tile(a_ptr, offs, m).to(tl.float64)
            b = _tile(b_ptr, offs, m).to(tl.float64)
            sa += tl.sum(a, axis=1)
            qa += tl.sum(a * a, axis=1)
            sb += tl.sum(b, axis=1)
            qb += tl.sum(b * b, axis=1)
            db += tl.sum((a - b) * (a - b), axis=1)
            if COUNT == 3:
                x = _tile(c_ptr, offs, m).to(tl.float64)
                sc += tl.sum(x, axis=1)
                qc += tl.sum(x * x, axis=1)
                dc += tl.sum((a - x) * (a - x), axis=1)
        alpha = tl.load(w_ptr + cc, mask=cc < C, other=0.0).to(tl.float64)
        beta = tl.load(w_ptr + C + cc, mask=cc < C, other=0.0).to(tl.float64)
        ma = sa / hw
        va = tl.maximum(qa / hw - ma * ma, 0.0)
        term_b += _dists_channel_terms(ma, va, sb / hw, qb / hw, db / hw, alpha, beta)
        if COUNT == 3:
            term_c += _dists_channel_terms(ma, va, sc / hw, qc / hw, dc / hw, alpha, beta)
    tl.store(dists + n * L + layer, tl.sum(term_b, axis=0).to(tl.float32))
    if COUNT == 3:
        tl.store(dists + (N + n) * L + layer, tl.sum(term_c, axis=0).to(tl.float32))


@triton.jit
def _dists_channel_terms(ma, va, mx, mean_sq_x, mean_sq_diff, alpha, beta):
    """alpha (1 - S1) + beta (1 - S2) per channel (float64 [BLOCK_C]) from the reference's mean and
    variance and the other map's mean, mean square and mean squared difference."""
    vx = tl.maximum(mean_sq_x - mx * mx, 0.0)
    dm = ma - mx
    vd = tl.maximum(mean_sq_diff - dm * dm, 0.0)
    return alpha * (dm * dm / (ma * ma + mx * mx + 1e-6)) + beta * (vd / (va + vx + 1e-6))


# ---- backward (lpips, spatial, meanpool; style is differentiated by the caller) ----------------
#
# With y a map's channel vector at one position, n = |y|, s = n + eps and ŷ = y / s, a gradient a
# w.r.t. ŷ becomes dy = a / s - y (a . ŷ) / (n s) (second term 0 where n = 0). For spatial / lpips,
# a = (2/HW) w (ŷ0 - ŷq) for the reference and minus that for map q, w = g_spatial + g_lpips * lin_c.
# Meanpool applies the same rule to the channel means and spreads d/dm / HW over the positions.
# Float32 maps only: the Scorer widens 16-bit taps before a differentiable head.


@triton.jit
def _meanpool_backward_kernel(
    base, map_off, map_stride, chans, hws, chan_off, chsum, grad_meanpool, spread, N, L, TOTAL_C,
    COUNT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # One program per (layer, sample): every map's channel sums in a fixed order (float32 within a
    # tile, float64 across tiles into chsum [count, N, TOTAL_C]), then in float64 the gradient with
    # respect to each channel mean, divided by HW, into spread [count, N, TOTAL_C] (float32).
    layer = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    C = tl.load(chans + layer)
    HW = tl.load(hws + layer)
    coff = tl.load(chan_off + layer)
    _channel_sums(base, map_off, map_stride, layer, n, L, C, HW, chsum + coff, N, TOTAL_C, COUNT, BLOCK_C, BLOCK_P)
    hw = HW.to(tl.float64)
    c_count = C.to(tl.float64)
    # norms of the means of the reference (a), b and c
    sa = tl.zeros([BLOCK_C], dtype=tl.float64)
    sb = tl.zeros([BLOCK_C], dtype=tl.float64)
    sc = tl.zeros([BLOCK_C], dtype=tl.float64)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        ma = tl.load(chsum + n * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
        mb = tl.load(chsum + (N + n) * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
        sa += ma * ma
        sb += mb * mb
        if COUNT == 3:
            mc = tl.load(chsum + (2 * N + n) * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
            sc += mc * mc
    na = tl.sqrt(tl.sum(sa, axis=0))
    nb = tl.sqrt(tl.sum(sb, axis=0))
    nc = tl.sqrt(tl.sum(sc, axis=0))
    scale_a = 1.0 / (na + 1e-10)
    scale_b = 1.0 / (nb + 1e-10)
    scale_c = 1.0 / (nc + 1e-10)
    coef_b = 2.0 * tl.load(grad_meanpool + n * L + layer).to(tl.float64) / c_count
    coef_c = 0.0
    if COUNT == 3:
        coef_c = 2.0 * tl.load(grad_meanpool + (N + n) * L + layer).to(tl.float64) / c_count
    # a . n̂ per map
    along_a = tl.zeros([BLOCK_C], dtype=tl.float64)
    along_b = tl.zeros([BLOCK_C], dtype=tl.float64)
    along_c = tl.zeros([BLOCK_C], dtype=tl.float64)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        ua = tl.load(chsum + n * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw * scale_a
        ub = tl.load(chsum + (N + n) * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw * scale_b
        db = coef_b * (ua - ub)
        ga = db
        along_b -= db * ub
        if COUNT == 3:
            uc = tl.load(chsum + (2 * N + n) * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw * scale_c
            dc = coef_c * (ua - uc)
            ga += dc
            along_c -= dc * uc
        along_a += ga * ua
    # (0 where a mean vector is 0, as the reference's safe norm; no division by 0 in the other branch)
    radial_a = tl.where(na > 0, scale_a * tl.sum(along_a, axis=0) / tl.where(na > 0, na, 1.0), 0.0)
    radial_b = tl.where(nb > 0, scale_b * tl.sum(along_b, axis=0) / tl.where(nb > 0, nb, 1.0), 0.0)
    radial_c = tl.where(nc > 0, scale_c * tl.sum(along_c, axis=0) / tl.where(nc > 0, nc, 1.0), 0.0)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        ma = tl.load(chsum + n * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
        mb = tl.load(chsum + (N + n) * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
        db = coef_b * (ma * scale_a - mb * scale_b)
        ga = db
        tl.store(spread + (N + n) * TOTAL_C + coff + cc, ((scale_b * -db - mb * radial_b) / hw).to(tl.float32), mask=cc < C)
        if COUNT == 3:
            mc = tl.load(chsum + (2 * N + n) * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
            dc = coef_c * (ma * scale_a - mc * scale_c)
            ga += dc
            tl.store(spread + (2 * N + n) * TOTAL_C + coff + cc, ((scale_c * -dc - mc * radial_c) / hw).to(tl.float32),
                     mask=cc < C)
        tl.store(spread + n * TOTAL_C + coff + cc, ((scale_a * ga - ma * radial_a) / hw).to(tl.float32), mask=cc < C)


@triton.autotune(configs=_WARP_CONFIGS, key=["COUNT", "TOTAL_HW"])
@triton.jit
def _pointwise_backward_kernel(
    base, map_off, map_stride, chans, hws, lin, lin_off, tile_layer, tile_p0, grad_spatial, grad_lpips,
    spread, chan_off, grads, grad_off, NEED, N, L, TOTAL_C, TOTAL_HW,
    COUNT: tl.constexpr, WANT_TERMS: tl.constexpr, WANT_MEANPOOL: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # Over (tile of positions of a layer) x sample. grads: one float32 buffer; map k of layer l is
    # [N, C, HW] contiguous from element grad_off[k * L + l]. NEED: bit k set = map k's gradient is wanted.
    n, layer, C, HW, p, pmask, a_ptr, b_ptr, c_ptr = _position_tile(
        base, map_off, map_stride, chans, hws, tile_layer, tile_p0, L, BLOCK_P)
    ga_ptr = grads + tl.load(grad_off + layer) + n * C * HW
    gb_ptr = grads + tl.load(grad_off + L + layer) + n * C * HW
    gc_ptr = grads + tl.load(grad_off + 2 * L + layer) + n * C * HW
    need_a = (NEED & 1) != 0
    need_b = (NEED & 2) != 0
    need_c = (NEED & 4) != 0
    hw = HW.to(tl.float32)
    loff = tl.load(lin_off + layer)
    coff = tl.load(chan_off + layer)
    g_sp_b = tl.load(grad_spatial + n * L + layer)
    g_lp_b = tl.load(grad_lpips + n * L + layer)
    g_sp_c = 0.0
    g_lp_c = 0.0
    if COUNT == 3:
        g_sp_c = tl.load(grad_spatial + (N + n) * L + layer)
        g_lp_c = tl.load(grad_lpips + (N + n) * L + layer)
    ia = tl.zeros([BLOCK_P], dtype=tl.float32)
    ib = tl.zeros([BLOCK_P], dtype=tl.float32)
    ic = tl.zeros([BLOCK_P], dtype=tl.float32)
    ka = tl.zeros([BLOCK_P], dtype=tl.float32)  # the coefficient of y in dy, per map
    kb = tl.zeros([BLOCK_P], dtype=tl.float32)
    kc = tl.zeros([BLOCK_P], dtype=tl.float32)
    if WANT_TERMS:
        na, nb, nc = _position_norms(a_ptr, b_ptr, c_ptr, C, HW, p, pmask, COUNT, BLOCK_P, BLOCK_C)
        ia = 1.0 / (na + 1e-10)
        ib = 1.0 / (nb + 1e-10)
        ic = 1.0 / (nc + 1e-10)
        dot_a = tl.zeros([BLOCK_P], dtype=tl.float32)
        dot_b = tl.zeros([BLOCK_P], dtype=tl.float32)
        dot_c = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            cmask = cc < C
            offs = cc[:, None] * HW + p[None, :]
            m = cmask[:, None] & pmask[None, :]
            w = tl.load(lin + loff + cc, mask=cmask, other=0.0)[:, None]
            ya = _tile(a_ptr, offs, m) * ia[None, :]
            yb = _tile(b_ptr, offs, m) * ib[None, :]
            db = (2.0 / hw) * (g_sp_b + g_lp_b * w) * (ya - yb)
            ga = db
            dot_b -= tl.sum(db * yb, axis=0)
            if COUNT == 3:
                yc = _tile(c_ptr, offs, m) * ic[None, :]
                dc = (2.0 / hw) * (g_sp_c + g_lp_c * w) * (ya - yc)
                ga += dc
                dot_c -= tl.sum(dc * yc, axis=0)
            dot_a += tl.sum(ga * ya, axis=0)
        # (0 where a feature vector is 0, as the reference's safe norm; no division by 0 in the other branch)
        ka = tl.where(na > 0, ia * dot_a / tl.where(na > 0, na, 1.0), 0.0)
        kb = tl.where(nb > 0, ib * dot_b / tl.where(nb > 0, nb, 1.0), 0.0)
        kc = tl.where(nc > 0, ic * dot_c / tl.where(nc > 0, nc, 1.0), 0.0)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        cmask = cc < C
        offs = cc[:, None] * HW + p[None, :]
        m = cmask[:, None] & pmask[None, :]
        xa = _tile(a_ptr, offs, m)
        xb = _tile(b_ptr, offs, m)
        sp_a = tl.zeros([BLOCK_C], dtype=tl.float32)
        sp_b = tl.zeros([BLOCK_C], dtype=tl.float32)
        sp_c = tl.zeros([BLOCK_C], dtype=tl.float32)
        if WANT_MEANPOOL:
            sp_a = tl.load(spread + n * TOTAL_C + coff + cc, mask=cmask, other=0.0)
            sp_b = tl.load(spread + (N + n) * TOTAL_C + coff + cc, mask=cmask, other=0.0)
            if COUNT == 3:
                sp_c = tl.load(spread + (2 * N + n) * TOTAL_C + coff + cc, mask=cmask, other=0.0)
        w = tl.load(lin + loff + cc, mask=cmask, other=0.0)[:, None]
        db = (2.0 / hw) * (g_sp_b + g_lp_b * w) * (xa * ia[None, :] - xb * ib[None, :])
        ga = db
        tl.store(gb_ptr + offs, sp_b[:, None] + ib[None, :] * -db - xb * kb[None, :], mask=m & need_b)
        if COUNT == 3:
            xc = _tile(c_ptr, offs, m)
            dc = (2.0 / hw) * (g_sp_c + g_lp_c * w) * (xa * ia[None, :] - xc * ic[None, :])
            ga += dc
            tl.store(gc_ptr + offs, sp_c[:, None] + ic[None, :] * -dc - xc * kc[None, :], mask=m & need_c)
        tl.store(ga_ptr + offs, sp_a[:, None] + ia[None, :] * ga - xa * ka[None, :], mask=m & need_a)
