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

from ..fused_distance.reference import NORM_EPS, check_distance_names, normalize_channels


@dataclass
class LayerEmbedding:
    """What one layer of ``n`` images contributes (fields of distances not requested are None).

    unit: ``[n, HW * C]`` float64, the channel-normalised map position-major, divided by sqrt(HW).
    unit_sq, lpips_sq: ``[n]`` float64, ``sum unit^2`` and ``sum w unit^2`` (w repeated per position).
    mean_unit: ``[n, C]`` float64, the unit-normalised channel means divided by sqrt(C).
    gram: ``[n, C (C + 1) / 2]`` float64 packed Gram matrices over C (Gram form), or None.
    positions: ``[n, HW, C]`` float64 normalised position vectors (position form of style), or None.
    gram_sq: ``[n]`` float64 ``|G|_F^2 / C^2``.
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


@dataclass
class Embedding:
    """The embeddings of ``count`` images: one ``LayerEmbedding`` per tap, the distances and lin weights."""

    layers: List[LayerEmbedding]
    distances: Tuple[str, ...]
    lin: Optional[List[Tensor]]  # float64 [C_l] per layer, for lpips
    count: int


def style_position_form(channels: int, positions: int) -> bool:
    """Whether style's cross term costs less per pair in the position form (HW^2 C multiply-adds) than
    from packed Grams (C (C + 1) / 2): only for tiny maps, such as 3x3 taps of 384 channels or
    [N, C, 1, 1] class tokens. (At 7x7 and 192 channels the position form costs 25x more.)"""
    return positions * positions * channels < channels * (channels + 1) // 2


def embed(taps: Sequence[Tensor], distances: Sequence[str], lin: Optional[Sequence[Tensor]] = None) -> Embedding:
    """The embedding of the images whose taps are ``taps`` (L x ``[n, C_l, H_l, W_l]``, any float dtype)."""
    distances = check_distance_names(distances)
    if "lpips" in distances and (lin is None or len(lin) != len(taps)):
        raise ValueError("the lpips distance needs one lin weight vector [C_l] per tap")
    layers = []
    for index, tap in enumerate(taps):
        n, c, h, w = tap.shape
        hw = h * w
        y = tap.detach().double()
        layer = LayerEmbedding(channels=c, positions_count=hw)
        if {"spatial", "lpips", "style"} & set(distances):
            # position-major [n, HW, C]: a view for channels_last taps (the CPU Scorer's)
            unit = normalize_channels(y).permute(0, 2, 3, 1).reshape(n, hw, c)
            if {"spatial", "lpips"} & set(distances):
                layer.unit = (unit * (1 / math.sqrt(hw))).reshape(n, hw * c)
                squares = (layer.unit * layer.unit).reshape(n * hw, c)
                layer.unit_sq = squares.sum(1).reshape(n, hw).sum(1)
                if "lpips" in distances:
                    layer.lpips_sq = (squares @ lin[index].detach().double()).reshape(n, hw).sum(1)
            if "style" in distances:
                if style_position_form(c, hw):
                    layer.positions = unit.contiguous()
                    # |G|^2 = sum_pq (ŷ_p . ŷ_q)^2 / HW^2: the [HW, HW] products, cheaper than [C, C] here
                    products = torch.bmm(unit, unit.transpose(1, 2))
                    layer.gram_sq = (products * products).sum((1, 2)) / (hw * hw * c * c)
                else:
                    layer.gram = _packed_grams(unit)
                    layer.gram_sq = (layer.gram * layer.gram).sum(1)  # the same numbers as the cross term's
        if "meanpool" in distances:
            means = y.mean((2, 3))
            layer.mean_unit = means / (means.norm(dim=1, keepdim=True) + NORM_EPS) / math.sqrt(c)
        layers.append(layer)
    weights = None if "lpips" not in distances else [v.detach().double().reshape(-1) for v in lin]
    return Embedding(layers, distances, weights, taps[0].shape[0])


def _packed_grams(positions: Tensor) -> Tensor:
    """``[n, HW, C]`` normalised position vectors -> their Gram matrices ``G = ŶᵀŶ / HW`` packed as vectors
    ``[n, C (C + 1) / 2]`` (the diagonal, and sqrt 2 times the upper triangle) whose dot products are
    ``<Ga, Gb> / C^2``. The 1 / (C HW) scale is applied to the packed entries only."""
    n, hw, c = positions.shape
    products = torch.bmm(positions.transpose(1, 2), positions)  # [n, C, C], HW G
    index, scale = _upper_triangle(c, str(positions.device))
    return torch.index_select(products.reshape(n, c * c), 1, index) * (scale / hw)


@functools.lru_cache(maxsize=32)
def _upper_triangle(c: int, device: str) -> Tuple[Tensor, Tensor]:
    """Flat indices of the upper triangle of a C x C matrix and the packing scale (1, or sqrt 2 off the
    diagonal, over C), float64: a float32 sqrt 2 would cost 3e-8 of |G|^2."""
    rows, cols = torch.triu_indices(c, c, device=device)
    scale = torch.full(rows.shape, math.sqrt(2.0) / c, dtype=torch.float64, device=device)
    scale[rows == cols] = 1.0 / c
    return rows * c + cols, scale


def concat(parts: Sequence[Embedding]) -> Embedding:
    """The embeddings of several image blocks as one (their images in order)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    layers = []
    for i, layer in enumerate(first.layers):
        fields = {}
        for name in ("unit", "unit_sq", "lpips_sq", "mean_unit", "gram", "positions", "gram_sq"):
            values = [p.layers[i].__dict__[name] for p in parts]
            if len({v is None for v in values}) > 1 or len({p.layers[i].positions_count for p in parts}) > 1:
                raise ValueError("concat joins embeddings of one image size; compare sets of other sizes as "
                                 "separate embeddings (pairwise(a, b) takes two)")
            fields[name] = None if values[0] is None else torch.cat(values)
        layers.append(LayerEmbedding(layer.channels, layer.positions_count, **fields))
    return Embedding(layers, first.distances, first.lin, sum(p.count for p in parts))


def take(embedding: Embedding, start: int, stop: int) -> Embedding:
    """The embeddings of images ``start`` to ``stop`` (views)."""
    layers = [LayerEmbedding(layer.channels, layer.positions_count,
                             **{k: (v[start:stop] if isinstance(v, Tensor) else v) for k, v in layer.__dict__.items()
                                if k not in ("channels", "positions_count")})
              for layer in embedding.layers]
    return Embedding(layers, embedding.distances, embedding.lin, stop - start)


REFINE = 1e-6
"""A pair whose expanded term is below this share of its two squared norms is computed from the
difference of its embeddings (float64 expansion error ~1e-16 of the norms: at most 1e-10 relative
above the threshold)."""


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


def _layer_block(name: str, a: LayerEmbedding, b: LayerEmbedding, weight: Optional[Tensor]) -> Tensor:
    """Distance ``name`` of one layer between every image of ``a`` and of ``b``: ``[n, m]`` float64."""
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
            cross = (dots * dots).reshape(n, hw_a, m, hw_b).sum((1, 3)) / (hw_a * hw_b * c * c)
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


def check_comparable(a: Embedding, b: Embedding) -> None:
    """Two embeddings can be compared: same distances and taps, and for spatial/lpips the same map sizes."""
    same_lin = (a.lin is None) == (b.lin is None) and (a.lin is None or all(torch.equal(u, v) for u, v in zip(a.lin, b.lin)))
    if a.distances != b.distances or [la.channels for la in a.layers] != [lb.channels for lb in b.layers] or not same_lin:
        raise ValueError("pairwise needs two embeddings of the same Scorer (same distances, taps and lin weights)")
    by_position = [d for d in a.distances if d in ("spatial", "lpips")]
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
                weights = a.lin if name == "lpips" else [None] * len(a.layers)
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
    for value in (layer.unit, layer.mean_unit, layer.gram, layer.positions):
        if value is not None:
            return value.device
    return torch.device("cpu")
