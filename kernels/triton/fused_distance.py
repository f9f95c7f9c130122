"""The fused distance op in Triton: every distance, every layer, pairs and triplets, in three
launches whatever the number of layers (DESIGN.md section 5).

Layers live in different tensors; each launch gets one base pointer and per-layer element
offsets from it (a small int64 table), plus a work list: the pointwise kernel runs over
(tile of positions of a layer) x sample, the style kernel over (upper-triangle channel block
pair of a layer) x sample, the meanpool kernel over layer x sample.

1. ``_pointwise_kernel``: per-position channel norms, the spatial / lpips terms (difference of
   normalised vectors; compiled with ``enable_fp_fusion=False`` so equal maps give exactly 0)
   and, for style, the inverse norms per position ([count, N, sum HW]). The reference is read
   once for a triplet.
2. ``_style_kernel``: Gram differences through ``tl.dot`` tiles: for a block pair (I, J) it
   accumulates Ga[I, J] and Gx[I, J] over positions (normalising on the fly) and adds
   sum((Ga - Gx)^2), times 2 off the diagonal, to its own [count - 1, N, L] buffer (so the
   autotuner's trial runs never reset another kernel's results). No Gram matrix is stored.
3. ``_meanpool_kernel``: the channel sums of every map in one fixed order (no atomics, so equal
   maps give exactly 0), then the normalised means and the squared difference.

Inputs: float32, bfloat16 or float16 maps whose samples are NCHW-contiguous (any batch stride);
all arithmetic in float32. float32 Gram tiles use ``input_precision="ieee"`` (no TF32), so
results match the float32 reference to ~1e-5; bf16/fp16 tiles are cast to their input dtype
for the tensor cores (their own tolerance). spatial / lpips / style accumulate with atomics: the
summation order on a GPU is not fixed, so their last bits may vary from run to run.

Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors (slowly): that is how CI tests them.
Block sizes are fixed per mode (the work lists depend on them); the autotuner only picks warps
and stages, from configs built without touching a device.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Output slots, as in kernels/cpu/fused_distance.h.
SPATIAL, LPIPS, MEANPOOL, STYLE = 0, 1, 2, 3
SLOTS = ("spatial", "lpips", "meanpool", "style")

POINTWISE_BLOCK_P = 16 if INTERPRET else 128
STYLE_BLOCK_C = 16 if INTERPRET else 64
STYLE_BLOCK_P = 16 if INTERPRET else 64
CHANNEL_BLOCK = 16 if INTERPRET else 32

_WARP_CONFIGS = [triton.Config({}, num_warps=4, num_stages=2)] if INTERPRET else [
    triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3)
]


@triton.jit
def _map_ptr(base, map_off, map_stride, k, layer, n, L):
    """Pointer to sample ``n`` of map ``k`` (0 = reference) of ``layer``: one base pointer plus the
    per-layer element offset and batch stride from the host's tables."""
    return base + tl.load(map_off + k * L + layer) + n * tl.load(map_stride + k * L + layer)


@triton.jit
def _tile(ptr, offs, mask):
    """A masked [BLOCK_C, BLOCK_P] tile of a map, as float32 (zeros outside the map)."""
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


# reset_to_zero: the autotuner's trial runs must not leave their atomic sums behind. Each kernel
# accumulates into a buffer of its own, so one kernel's trials never wipe another's results.
@triton.autotune(configs=_WARP_CONFIGS, key=["COUNT", "TOTAL_HW"], reset_to_zero=["out"])
@triton.jit
def _pointwise_kernel(
    base, map_off, map_stride, chans, hws, pos_off, lin, lin_off, tile_layer, tile_p0,
    inv, out, N, L, TOTAL_HW,
    COUNT: tl.constexpr, WANT_TERMS: tl.constexpr, WANT_STYLE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    t = tl.program_id(0)
    n = tl.program_id(1)
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
        pairs = COUNT - 1
        hw = HW.to(tl.float32)
        tl.atomic_add(out + ((SPATIAL * pairs) * N + n) * L + layer, tl.sum(sp_b, axis=0) / hw)
        tl.atomic_add(out + ((LPIPS * pairs) * N + n) * L + layer, tl.sum(lp_b, axis=0) / hw)
        if COUNT == 3:
            tl.atomic_add(out + ((SPATIAL * pairs + 1) * N + n) * L + layer, tl.sum(sp_c, axis=0) / hw)
            tl.atomic_add(out + ((LPIPS * pairs + 1) * N + n) * L + layer, tl.sum(lp_c, axis=0) / hw)


@triton.jit
def _gram_tile(ptr, inv_p, rows, p, rmask, pmask, HW, DOT_DTYPE: tl.constexpr):
    x = tl.load(ptr + rows[:, None] * HW + p[None, :], mask=rmask[:, None] & pmask[None, :], other=0.0).to(tl.float32)
    return (x * inv_p[None, :]).to(DOT_DTYPE)


@triton.autotune(configs=_WARP_CONFIGS, key=["COUNT", "TOTAL_HW"], reset_to_zero=["style_out"])
@triton.jit
def _style_kernel(
    base, map_off, map_stride, chans, hws, pos_off, blk_layer, blk_i0, blk_j0, inv, style_out, N, L, TOTAL_HW,
    COUNT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    n = tl.program_id(1)
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
        ga += tl.dot(_gram_tile(a_ptr, inv_a, ri, p, mi, pmask, HW, DOT_DTYPE),
                     tl.trans(_gram_tile(a_ptr, inv_a, rj, p, mj, pmask, HW, DOT_DTYPE)), input_precision=PRECISION)
        gb += tl.dot(_gram_tile(b_ptr, inv_b, ri, p, mi, pmask, HW, DOT_DTYPE),
                     tl.trans(_gram_tile(b_ptr, inv_b, rj, p, mj, pmask, HW, DOT_DTYPE)), input_precision=PRECISION)
        if COUNT == 3:
            inv_c = tl.load(inv + (2 * N + n) * TOTAL_HW + poff + p, mask=pmask, other=0.0)
            gc += tl.dot(_gram_tile(c_ptr, inv_c, ri, p, mi, pmask, HW, DOT_DTYPE),
                         tl.trans(_gram_tile(c_ptr, inv_c, rj, p, mj, pmask, HW, DOT_DTYPE)), input_precision=PRECISION)
    hw = HW.to(tl.float32)
    c = C.to(tl.float32)
    scale = tl.where(i0 == j0, 1.0, 2.0) / (hw * hw * c * c)
    db = ga - gb
    tl.atomic_add(style_out + n * L + layer, tl.sum(tl.sum(db * db, axis=1), axis=0) * scale)
    if COUNT == 3:
        dc = ga - gc
        tl.atomic_add(style_out + (N + n) * L + layer, tl.sum(tl.sum(dc * dc, axis=1), axis=0) * scale)


@triton.jit
def _meanpool_kernel(
    base, map_off, map_stride, chans, hws, chan_off, chsum, out, N, L, TOTAL_C,
    COUNT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # One program per (layer, sample) computes every map's channel sums in the same fixed order
    # (no atomics), so equal maps give bitwise equal means and the term is exactly 0.
    layer = tl.program_id(0)
    n = tl.program_id(1)
    C = tl.load(chans + layer)
    HW = tl.load(hws + layer)
    hw = HW.to(tl.float32)
    coff = tl.load(chan_off + layer)
    for k in tl.static_range(COUNT):
        ptr = _map_ptr(base, map_off, map_stride, k, layer, n, L)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            acc = tl.zeros([BLOCK_C], dtype=tl.float32)
            for p0 in range(0, HW, BLOCK_P):
                p = p0 + tl.arange(0, BLOCK_P)
                m = (cc < C)[:, None] & (p < HW)[None, :]
                acc += tl.sum(tl.load(ptr + cc[:, None] * HW + p[None, :], mask=m, other=0.0).to(tl.float32), axis=1)
            tl.store(chsum + (k * N + n) * TOTAL_C + coff + cc, acc, mask=cc < C)
    tl.debug_barrier()  # the sums are read back below by other threads of this program
    pairs = COUNT - 1
    for q in tl.static_range(COUNT - 1):
        sa = tl.zeros([BLOCK_C], dtype=tl.float32)
        sx = tl.zeros([BLOCK_C], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            ma = tl.load(chsum + n * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
            mx = tl.load(chsum + ((q + 1) * N + n) * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
            sa += ma * ma
            sx += mx * mx
        scale_a = 1.0 / (tl.sqrt(tl.sum(sa, axis=0)) + 1e-10)
        scale_x = 1.0 / (tl.sqrt(tl.sum(sx, axis=0)) + 1e-10)
        acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            ma = tl.load(chsum + n * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
            mx = tl.load(chsum + ((q + 1) * N + n) * TOTAL_C + coff + cc, mask=cc < C, other=0.0) / hw
            d = ma * scale_a - mx * scale_x
            acc += d * d
        tl.store(out + ((MEANPOOL * pairs + q) * N + n) * L + layer, tl.sum(acc, axis=0) / C.to(tl.float32))


# Gram tiles go to tl.dot in the input dtype (tensor cores for 16-bit inputs). Triton's
# interpreter has no bfloat16 matrix product (numpy has no such type), so there bf16 tiles stay
# float32; only the GPU path rounds them to bf16.
_DOT_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.float32 if INTERPRET else tl.bfloat16, torch.float16: tl.float16}


def fused_distance_triton(
    feats: Sequence[Sequence[torch.Tensor]], distances: Sequence[str], lin=None
) -> List[Dict[str, torch.Tensor]]:
    """``feats``: 2 or 3 lists of L maps ``[N, C_l, H_l, W_l]`` (one dtype among float32, bfloat16,
    float16; one device). Returns one ``{name: [N, L]}`` float32 per comparison with the first list."""
    feats = [[t.detach() for t in lst] for lst in feats]
    if any(t.stride()[1:] != (t.shape[2] * t.shape[3], t.shape[3], 1) for lst in feats for t in lst):
        raise ValueError("the Triton kernels read maps whose samples are NCHW-contiguous; call .contiguous() first")
    count, layers = len(feats), len(feats[0])
    first = feats[0][0]
    device, dtype, n = first.device, first.dtype, first.shape[0]
    elem = first.element_size()
    chans = [t.shape[1] for t in feats[0]]
    hws = [t.shape[2] * t.shape[3] for t in feats[0]]
    base = first.data_ptr()
    offsets = torch.zeros(3, layers, dtype=torch.int64)
    strides = torch.zeros(3, layers, dtype=torch.int64)
    for k in range(count):
        for layer, t in enumerate(feats[k]):
            delta = t.data_ptr() - base
            if delta % elem:
                raise ValueError("feature maps must be aligned to their element size")
            offsets[k, layer] = delta // elem
            strides[k, layer] = t.stride(0)
    as_dev = lambda values: torch.as_tensor(values, dtype=torch.int64).to(device)  # noqa: E731
    chan_off = [0] + list(torch.cumsum(torch.tensor(chans), 0)[:-1].tolist())
    pos_off = [0] + list(torch.cumsum(torch.tensor(hws), 0)[:-1].tolist())
    total_c, total_hw = sum(chans), sum(hws)
    want = set(distances)
    pairs = count - 1
    out = torch.full((4, pairs, n, layers), float("nan"), dtype=torch.float32, device=device)
    for d in want:
        out[SLOTS.index(d)].zero_()  # accumulated atomically; unrequested slots stay NaN
    lin_flat = (torch.cat([w.reshape(-1) for w in lin]).to(device=device, dtype=torch.float32)
                if lin is not None and "lpips" in want else torch.zeros(total_c, device=device))
    # Scratch written before it is read: no zeroing needed.
    inv = torch.empty(count, n, total_hw, dtype=torch.float32, device=device) if "style" in want else out
    chsum = torch.empty(count, n, total_c, dtype=torch.float32, device=device) if "meanpool" in want else out
    tiles = [(layer, p0) for layer in range(layers) for p0 in range(0, hws[layer], POINTWISE_BLOCK_P)]
    tables = dict(map_off=as_dev(offsets.reshape(-1).tolist()), map_stride=as_dev(strides.reshape(-1).tolist()),
                  chans=as_dev(chans), hws=as_dev(hws))
    terms = bool(want & {"spatial", "lpips"})
    if n and (terms or "style" in want):
        _pointwise_kernel[(len(tiles), n)](
            first, tables["map_off"], tables["map_stride"], tables["chans"], tables["hws"], as_dev(pos_off),
            lin_flat, as_dev(chan_off), as_dev([t[0] for t in tiles]), as_dev([t[1] for t in tiles]),
            inv, out, n, layers, total_hw,
            COUNT=count, WANT_TERMS=terms, WANT_STYLE="style" in want, BLOCK_P=POINTWISE_BLOCK_P, BLOCK_C=CHANNEL_BLOCK,
            enable_fp_fusion=False,  # a * ia - b * ib must not become an FMA: equal maps give exactly 0
        )
    if n and "style" in want:
        style_out = torch.zeros(pairs, n, layers, dtype=torch.float32, device=device)
        blocks = [(layer, i0, j0) for layer in range(layers) for i0 in range(0, chans[layer], STYLE_BLOCK_C)
                  for j0 in range(i0, chans[layer], STYLE_BLOCK_C)]
        _style_kernel[(len(blocks), n)](
            first, tables["map_off"], tables["map_stride"], tables["chans"], tables["hws"], as_dev(pos_off),
            as_dev([b[0] for b in blocks]), as_dev([b[1] for b in blocks]), as_dev([b[2] for b in blocks]),
            inv, style_out, n, layers, total_hw,
            COUNT=count, BLOCK_C=STYLE_BLOCK_C, BLOCK_P=STYLE_BLOCK_P, DOT_DTYPE=_DOT_DTYPES[dtype],
            PRECISION="ieee" if _DOT_DTYPES[dtype] == tl.float32 else "tf32",
        )
        out[STYLE] = style_out
    if n and "meanpool" in want:
        _meanpool_kernel[(layers, n)](
            first, tables["map_off"], tables["map_stride"], tables["chans"], tables["hws"], as_dev(chan_off), chsum, out,
            n, layers, total_c, COUNT=count, BLOCK_C=CHANNEL_BLOCK, BLOCK_P=POINTWISE_BLOCK_P,
        )
    return [{d: out[SLOTS.index(d), q] for d in distances} for q in range(pairs)]
