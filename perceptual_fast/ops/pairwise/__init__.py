"""``pairwise``: every distance between every image of one set and every image of another, from one
trunk pass per image.

The fused op compares maps pair by pair. Here each image's taps are turned once into an
*embedding* (``embed``), and every distance becomes squared norms plus a cross term that one
matrix product gives for a whole block of pairs (``pairwise_terms``, ``pairwise_tiles``):

* ``spatial`` / ``lpips``: ``mean_p sum_c w_c (ŷa - ŷb)^2 = Sa + Sb - 2 <w ŷa, ŷb> / HW`` over the
  normalised maps flattened position-major (``w_c = 1`` for spatial, the lin weights for lpips);
* ``meanpool``: ``|na - nb|^2 / C`` with ``n`` the unit-normalised channel means;
* ``style``: ``|Ga - Gb|_F^2 / C^2``, the cross term ``<Ga, Gb>`` either from the Gram matrices
  packed as vectors (``C (C + 1) / 2`` entries: the diagonal, and the upper triangle times
  sqrt 2), or, when that costs more per pair (``HW^2 C < C (C + 1) / 2``: tiny maps), in the
  position form ``<Ga, Gb> = sum_pq (ŷa_p . ŷb_q)^2 / HW^2``: one product of the stacked position
  vectors. The packed Grams take ``C (C + 1) / 2`` float64 per image and layer (alexnet at 64 px:
  0.2 MB an image in all; a ViT-B's 12 patch taps at 64 px: 28 MB).
* ``dists``: per channel, the mean term ``(ma - mb)^2 / (ma^2 + mb^2 + c1)`` from the channel means,
  and ``var(a - b) = va + vb - 2 cov`` with the covariance a per-channel product of the centred
  maps (one batched matrix product over the channels, in chunks of channels per tile).

Everything after the trunk is float64: the normalised maps, norms, Gram matrices and every cross
product (float32 normalised maps put 30% errors into the style term of a pair one 1e-3 noise
apart; measured). The expansion still cancels: its error is ~1e-16 of the norms. So a pair whose
expanded term is below ``REFINE`` times its norms (near-identical images) is computed again from
the difference of its embeddings, the fused op's own formulation: every term matches the float64
reference to 1e-5 relative however close the images are (tests/ops/pairwise/), and identical
images give exactly 0 (a set compared with itself has an exact 0 diagonal).

The matrix products are torch's (MKL/oneDNN on CPUs, cuBLAS on GPUs), on any device the taps are
on: a tiled float64 product is what those libraries are built for, and a layer's work is one or
two of them per tile, so no kernel of ours would beat them (bench/pairwise.py states the GEMM
bound it reaches).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..fused_distance.reference import DISTS_C1, DISTS_C2, NORM_EPS, check_distance_names


@dataclass
class LayerEmbedding:
    """What one layer of ``n`` images contributes (fields of distances not requested are None).

    unit: ``[n, HW * C]`` float64, the channel-normalised map position-major, divided by sqrt(HW) (``ŷ / sqrt(HW)``).
    unit_sq, lpips_sq: ``[n]`` float64, ``sum unit^2`` and ``sum w unit^2`` (w repeated per position).
    mean_unit: ``[n, C]`` float64, the unit-normalised channel means divided by sqrt(C).
    gram: ``[n, C (C + 1) / 2]`` float64 packed Gram matrices over C (Gram form), or None.
    positions: ``[n, HW, C]`` float64, the same position vectors (position form of style), or None.
    gram_sq: ``[n]`` float64 ``|G|_F^2 / C^2``.
    channel_mean, channel_var: ``[n, C]`` float64 per-channel mean and (population) variance (dists).
    centred: ``[n, C, HW]`` float64, the map minus its channel means, divided by sqrt(HW) (dists).
    """

    channels: int
    positions_count: int
    unit: Optional[Tensor] = None
    unit_sq: Optional[Tensor] = None
    lpips_sq: Optional[Tensor] = None
    mean_unit: Optional[Tensor] = None
    gram: Optional[Tensor] = None
    positions: Optional[Tensor] = None
    gram_sq: Optional[Tensor] = None
    channel_mean: Optional[Tensor] = None
    channel_var: Optional[Tensor] = None
    centred: Optional[Tensor] = None


_FIELDS = ("unit", "unit_sq", "lpips_sq", "mean_unit", "gram", "positions", "gram_sq", "channel_mean", "channel_var",
           "centred")
"""The per-image fields of a LayerEmbedding (first dimension: the images)."""


@dataclass
class Embedding:
    """The embeddings of ``count`` images: one ``LayerEmbedding`` per tap, the distances and the weights."""

    layers: List[LayerEmbedding]
    distances: Tuple[str, ...]
    lin: Optional[List[Tensor]]  # float64 [C_l] per layer, for lpips
    count: int
    dists_weights: Optional[List[Tensor]] = None  # float64 [2, C_l] per layer (alpha; beta), for dists


def style_position_form(channels: int, positions: int) -> bool:
    """Whether style's cross term costs less per pair in the position form (HW^2 C multiply-adds) than
    from packed Grams (C (C + 1) / 2): only for tiny maps, such as 3x3 taps of 384 channels or
    [N, C, 1, 1] class tokens. (At 7x7 and 192 channels the position form costs 25x more.)"""
    return positions * positions * channels < channels * (channels + 1) // 2


def embed(taps: Sequence[Tensor], distances: Sequence[str], lin: Optional[Sequence[Tensor]] = None,
          dists_weights: Optional[Sequence[Tensor]] = None) -> Embedding:
    """The embedding of the images whose taps are ``taps`` (L x ``[n, C_l, H_l, W_l]``, any float dtype)."""
    distances = check_distance_names(distances)
    if "lpips" in distances and (lin is None or len(lin) != len(taps)):
        raise ValueError("the lpips distance needs one lin weight vector [C_l] per tap")
    if "dists" in distances and (dists_weights is None or len(dists_weights) != len(taps)):
        raise ValueError("the dists distance needs one alpha/beta tensor [2, C_l] per tap")
    layers = []
    for index, tap in enumerate(taps):
        n, c, h, w = tap.shape
        hw = h * w
        tap = tap.detach()
        layer = LayerEmbedding(channels=c, positions_count=hw)
        if {"spatial", "lpips", "style"} & set(distances):
            unit = _unit_positions(tap)
            if {"spatial", "lpips"} & set(distances):
                layer.unit = unit.reshape(n, hw * c)
                per_channel = (unit * unit).sum(1)  # [n, C]: sum over positions first, then over channels
                layer.unit_sq = per_channel.sum(1)
                if "lpips" in distances:
                    layer.lpips_sq = per_channel @ lin[index].detach().double()
            if "style" in distances:
                if style_position_form(c, hw):
                    layer.positions = unit.contiguous()
                    # |G|^2 = sum_pq (ŷ_p . ŷ_q)^2 / HW^2: the [HW, HW] products, cheaper than [C, C] here
                    products = torch.bmm(layer.positions, layer.positions.transpose(1, 2))
                    layer.gram_sq = (products * products).sum((1, 2)) / (c * c)
                else:
                    layer.gram = _packed_grams(unit)
                    layer.gram_sq = (layer.gram * layer.gram).sum(1)  # the same numbers as the cross term's
        if "meanpool" in distances:
            means = tap.mean((2, 3), dtype=torch.float64)
            layer.mean_unit = means / (means.norm(dim=1, keepdim=True) + NORM_EPS) / math.sqrt(c)
        if "dists" in distances:
            y = tap.double()
            layer.channel_mean = y.mean((2, 3))
            layer.centred = ((y - layer.channel_mean[..., None, None]) * (1 / math.sqrt(hw))).reshape(n, c, hw)
            layer.channel_var = (layer.centred * layer.centred).sum(2)
        layers.append(layer)
    weights = None if "lpips" not in distances else [v.detach().double().reshape(-1) for v in lin]
    alpha_beta = None if "dists" not in distances else [w.detach().double() for w in dists_weights]
    return Embedding(layers, distances, weights, taps[0].shape[0], alpha_beta)


def _unit_positions(tap: Tensor) -> Tensor:
    """A tap ``[n, C, H, W]`` (any float dtype and layout) -> its channel-normalised map divided by sqrt(HW),
    position-major: ``[n, HW, C]`` float64, ``ŷ / sqrt(HW)`` with ``ŷ = y / (|y| + 1e-10)`` per position.

    One pass over the tap: the norms are accumulated in float64 from the tap as it is, and the quotient
    is written in float64 (a view of the result for channels_last taps, the CPU Scorer's)."""
    n, c, h, w = tap.shape
    norms = torch.linalg.vector_norm(tap, dim=1, keepdim=True, dtype=torch.float64)
    unit = tap / norms.add_(NORM_EPS).mul_(math.sqrt(h * w))  # float64, as the divisor is
    return unit.permute(0, 2, 3, 1).reshape(n, h * w, c)


GRAM_CHUNK = 8
"""Images whose Gram products are packed at a time: 8 x C^2 float64 (2.4 MB at C = 192) stay in cache
between the product and the packing (72 images of alexnet's 7x7 taps at 64 px: 7.4 -> 5 ms, with gather)."""


def _packed_grams(unit: Tensor) -> Tensor:
    """``[n, HW, C]`` position vectors ``ŷ / sqrt(HW)`` -> their Gram matrices ``G = ŶᵀŶ / HW`` packed as
    vectors ``[n, C (C + 1) / 2]`` float64 (the diagonal, and sqrt 2 times the upper triangle, over C)
    whose dot products are ``<Ga, Gb> / C^2``."""
    n, hw, c = unit.shape
    index, scale = _upper_triangle(c, str(unit.device))
    packed = torch.empty(n, index.shape[1], dtype=unit.dtype, device=unit.device)
    for start in range(0, n, GRAM_CHUNK):
        part = unit[start:start + GRAM_CHUNK]
        products = torch.bmm(part.transpose(1, 2), part).reshape(len(part), c * c)
        # gather with the index expanded: 1.5x faster than take_along_dim, which also wraps the indices
        torch.gather(products, 1, index.expand(len(part), -1), out=packed[start:start + GRAM_CHUNK])
    return packed.mul_(scale)


@functools.lru_cache(maxsize=32)
def _upper_triangle(c: int, device: str) -> Tuple[Tensor, Tensor]:
    """Flat indices ``[1, C (C + 1) / 2]`` of the upper triangle of a C x C matrix and the packing scale (1,
    or sqrt 2 off the diagonal, over C), float64: a float32 sqrt 2 would cost 3e-8 of |G|^2."""
    rows, cols = torch.triu_indices(c, c, device=device)
    scale = torch.full(rows.shape, math.sqrt(2.0) / c, dtype=torch.float64, device=device)
    scale[rows == cols] = 1.0 / c
    return (rows * c + cols)[None], scale


def concat(parts: Sequence[Embedding]) -> Embedding:
    """The embeddings of several image blocks as one (their images in order)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    layers = []
    for i, layer in enumerate(first.layers):
        fields = {}
        for name in _FIELDS:
            values = [p.layers[i].__dict__[name] for p in parts]
            if len({v is None for v in values}) > 1 or len({p.layers[i].positions_count for p in parts}) > 1:
                raise ValueError("concat joins embeddings of one image size; compare sets of other sizes as "
                                 "separate embeddings (pairwise(a, b) takes two)")
            fields[name] = None if values[0] is None else torch.cat(values)
        layers.append(LayerEmbedding(layer.channels, layer.positions_count, **fields))
    return Embedding(layers, first.distances, first.lin, sum(p.count for p in parts), first.dists_weights)


def take(embedding: Embedding, start: int, stop: int) -> Embedding:
    """The embeddings of images ``start`` to ``stop`` (views)."""
    layers = [LayerEmbedding(layer.channels, layer.positions_count,
                             **{k: (v[start:stop] if isinstance(v, Tensor) else v) for k, v in layer.__dict__.items()
                                if k not in ("channels", "positions_count")})
              for layer in embedding.layers]
    return Embedding(layers, embedding.distances, embedding.lin, stop - start, embedding.dists_weights)


REFINE = 1e-6
"""A pair whose expanded term is below this share of its two squared norms is computed from the
difference of its embeddings. Above it, the expansion's float64 rounding (~E eps of the norms for
dot products of E entries, eps = 1.1e-16) is at most ~1e-7 of the term for E in the thousands,
and ~1e-9 in practice: well inside the 1e-5 the distances are held to."""


def _difference(name: str, a: LayerEmbedding, b: LayerEmbedding, weight: Optional[Tensor], i: Tensor, j: Tensor
                ) -> Tensor:
    """The term of pairs ``(a[i[k]], b[j[k]])`` from the difference of their embeddings: ``[k]`` float64."""
    if name in ("spatial", "lpips"):
        diff = (a.unit[i] - b.unit[j]) ** 2
        if name == "lpips":
            diff = diff.reshape(len(i), -1, a.channels) * weight.reshape(1, 1, -1)
        return diff.reshape(len(i), -1).sum(1)
    if name == "meanpool":
        return ((a.mean_unit[i] - b.mean_unit[j]) ** 2).sum(1)
    # style, position form on a side: the packed Gram matrices of these pairs only
    ga = _packed_grams(a.positions[i]) if a.gram is None else a.gram[i]
    gb = _packed_grams(b.positions[j]) if b.gram is None else b.gram[j]
    return ((ga - gb) ** 2).sum(1)


DISTS_CHANNEL_CHUNK = 64
"""Channels of one dists product: its per-channel terms take ``chunk x n x m`` float64 (33 MB at 256 x 256)."""


def _dists_block(a: LayerEmbedding, b: LayerEmbedding, weight: Tensor) -> Tensor:
    """DISTS's term of one layer between every image of ``a`` and of ``b``: ``[n, m]`` float64.

    Per channel, the mean part ``alpha (ma - mb)^2 / (ma^2 + mb^2 + c1)`` (a difference: exact), and
    the structure part ``beta var(a - b) / (va + vb + c2)`` with ``var(a - b) = va + vb - 2 cov``, the
    covariances one product of the centred maps per chunk of channels. Pairs whose structure part is
    below ``REFINE`` of its scale ``sum beta (va + vb) / (va + vb + c2)`` (near-identical images) take
    ``var(a - b)`` from the difference of their centred maps instead."""
    alpha, beta = weight[0], weight[1]
    n, m = a.channel_mean.shape[0], b.channel_mean.shape[0]
    mean_part, structure, scale = (torch.zeros(n, m, dtype=torch.float64, device=alpha.device) for _ in range(3))
    for c0 in range(0, a.channels, DISTS_CHANNEL_CHUNK):
        cs = slice(c0, c0 + DISTS_CHANNEL_CHUNK)
        ma, mb = a.channel_mean[:, None, cs], b.channel_mean[None, :, cs]  # [n, 1, k], [1, m, k]
        var_sum = a.channel_var[:, None, cs] + b.channel_var[None, :, cs]
        cov = torch.bmm(a.centred[:, cs].transpose(0, 1), b.centred[:, cs].permute(1, 2, 0)).permute(1, 2, 0)
        mean_part += (alpha[cs] * ((ma - mb) ** 2 / (ma * ma + mb * mb + DISTS_C1))).sum(-1)
        structure += (beta[cs] * ((var_sum - 2 * cov).clamp_min(0) / (var_sum + DISTS_C2))).sum(-1)
        scale += (beta[cs] * (var_sum / (var_sum + DISTS_C2))).sum(-1)
    i, j = torch.nonzero(structure <= REFINE * scale, as_tuple=True)
    for start in range(0, len(i), 32):  # near-identical pairs, a few at a time (their maps are gathered)
        k = slice(start, start + 32)
        var_diff = ((a.centred[i[k]] - b.centred[j[k]]) ** 2).sum(2)  # [k, C]
        var_sum = a.channel_var[i[k]] + b.channel_var[j[k]]
        structure[i[k], j[k]] = (beta * (var_diff / (var_sum + DISTS_C2))).sum(1)
    return mean_part + structure


def _layer_block(name: str, a: LayerEmbedding, b: LayerEmbedding, weight: Optional[Tensor]) -> Tensor:
    """Distance ``name`` of one layer between every image of ``a`` and of ``b``: ``[n, m]`` float64."""
    if name == "dists":
        return _dists_block(a, b, weight)
    if name in ("spatial", "lpips"):
        left = a.unit
        if name == "lpips":
            left = (left.reshape(left.shape[0], -1, a.channels) * weight.reshape(1, 1, -1)).reshape(left.shape[0], -1)
        sq_a, sq_b = (a.unit_sq, b.unit_sq) if name == "spatial" else (a.lpips_sq, b.lpips_sq)
        cross = left @ b.unit.T
    elif name == "meanpool":
        sq_a, sq_b, cross = (a.mean_unit ** 2).sum(1), (b.mean_unit ** 2).sum(1), a.mean_unit @ b.mean_unit.T
    else:  # style
        sq_a, sq_b = a.gram_sq, b.gram_sq
        if a.positions is not None and b.positions is not None:
            (n, hw_a, c), (m, hw_b, _) = a.positions.shape, b.positions.shape
            dots = a.positions.reshape(n * hw_a, c) @ b.positions.reshape(m * hw_b, c).T
            cross = (dots * dots).reshape(n, hw_a, m, hw_b).sum((1, 3)) / (c * c)
        else:  # sets of different sizes may hold different forms: packed Grams on both sides then
            ga = a.gram if a.gram is not None else _packed_grams(a.positions)
            gb = b.gram if b.gram is not None else _packed_grams(b.positions)
            cross = ga @ gb.T
    scale = sq_a[:, None] + sq_b[None, :]
    terms = (scale - 2 * cross).clamp_min_(0)
    i, j = torch.nonzero(terms <= REFINE * scale, as_tuple=True)
    for start in range(0, len(i), 256):  # near-identical pairs, in chunks (their embeddings are gathered)
        k = slice(start, start + 256)
        terms[i[k], j[k]] = _difference(name, a, b, weight, i[k], j[k])
    return terms


def _same_weights(u: Optional[List[Tensor]], v: Optional[List[Tensor]]) -> bool:
    return (u is None) == (v is None) and (u is None or all(torch.equal(x, y) for x, y in zip(u, v)))


def check_comparable(a: Embedding, b: Embedding) -> None:
    """Two embeddings can be compared: same distances, taps and weights, and for spatial/lpips/dists the
    same map sizes."""
    same_weights = _same_weights(a.lin, b.lin) and _same_weights(a.dists_weights, b.dists_weights)
    if a.distances != b.distances or [la.channels for la in a.layers] != [lb.channels for lb in b.layers] or not same_weights:
        raise ValueError("pairwise needs two embeddings of the same Scorer (same distances, taps and lin weights)")
    by_position = [d for d in a.distances if d in ("spatial", "lpips", "dists")]
    if by_position and [la.positions_count for la in a.layers] != [lb.positions_count for lb in b.layers]:
        raise ValueError(f"the {by_position[0]} distance compares maps position by position: both image sets need "
                         "the same size (resize them, or use meanpool/style, which compare sets of any sizes)")


def pairwise_tiles(a: Embedding, b: Embedding, block: int = 256, upper: bool = False
                   ) -> Iterator[Tuple[int, int, Dict[str, Tensor]]]:
    """``(i, j, {name: [n, m, L]})`` tiles of the ``[N, M, L]`` per-layer distances, ``block`` x ``block``
    images at a time (float64; memory of a tile's products, not of the whole matrix).

    upper: only the tiles on and above the diagonal (``b`` is ``a``: the rest is their transpose), the
    diagonal tiles made exactly symmetric (their upper triangle mirrored).
    """
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive number of images; got {block!r}")
    check_comparable(a, b)
    for i in range(0, a.count, block):
        rows = take(a, i, min(i + block, a.count))
        for j in range(i if upper else 0, b.count, block):
            cols = take(b, j, min(j + block, b.count))
            tile = {}
            for name in a.distances:
                weights = {"lpips": a.lin, "dists": a.dists_weights}.get(name) or [None] * len(a.layers)
                tile[name] = torch.stack([_layer_block(name, la, lb, w) for la, lb, w in
                                          zip(rows.layers, cols.layers, weights)], dim=-1)
                if upper and i == j:  # a diagonal tile of a set against itself: exactly symmetric
                    upper_part = tile[name].permute(2, 0, 1).triu()
                    tile[name] = (upper_part + upper_part.triu(1).transpose(1, 2)).permute(1, 2, 0)
            yield i, j, tile


def place_tile(out, i: int, j: int, values, mirror: bool) -> None:
    """Writes tile ``values`` (``[n, m, ...]``, a tensor or an array) at rows i.., columns j.. of ``out``,
    and, with ``mirror`` (a set against itself, upper tiles only), its transpose at j.., i.."""
    n, m = values.shape[:2]
    out[i:i + n, j:j + m] = values
    if mirror and i != j:
        out[j:j + m, i:i + n] = values.swapaxes(0, 1)


def pairwise_terms(a: Embedding, b: Embedding, block: int = 256) -> Dict[str, Tensor]:
    """Per-layer distances between every image of ``a`` and of ``b``: ``{name: [N, M, L]}`` float64.

    ``b`` being ``a`` (a set against itself): the tiles above the diagonal are computed and mirrored,
    so the matrix is exactly symmetric (and half the work)."""
    same = b is a
    out = {name: torch.full((a.count, b.count, len(a.layers)), math.nan, dtype=torch.float64, device=_device(a))
           for name in a.distances}
    for i, j, tile in pairwise_tiles(a, b, block, upper=same):
        for name, values in tile.items():
            place_tile(out[name], i, j, values, mirror=same)
    return out


def _device(embedding: Embedding) -> torch.device:
    layer = embedding.layers[0]
    for value in (layer.unit, layer.mean_unit, layer.gram, layer.positions, layer.channel_mean):
        if value is not None:
            return value.device
    return torch.device("cpu")
