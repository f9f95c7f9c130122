"""The reference of the fused distance op: the distances of docs/design.md (section 4) in plain PyTorch.

Every fast path is tested against these functions. They run on any device, in float32 or
float64, and are differentiable with finite gradients everywhere (including feature vectors that
are all zero and x0 == x1).

Shapes: a *feature map* ``y`` is ``[N, C, H, W]``; a *layer term* is ``[N]``; a list of L
feature maps gives per-layer terms ``[N, L]`` whose row sum is the distance ``[N]``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from .backend import Backend, DistanceRequest, Terms

DISTANCES = ("lpips", "spatial", "meanpool", "style", "dists")
"""Every distance name the engine computes, in a fixed order: also the kernels' output slot order
and mask bits (kernels/distance_slots.h defines the same order for C++ and CUDA; a test compares)."""

NORM_EPS = 1e-10
"""LPIPS's epsilon, added outside the square root of the channel norm."""

DISTS_C1 = 1e-6
DISTS_C2 = 1e-6
"""DISTS's stabilising constants of the mean (S1) and structure (S2) similarities."""


def _safe_norm(y: Tensor, dim: int) -> Tensor:
    """sqrt(sum y^2) along ``dim`` (kept), with a gradient of 0 instead of NaN where y is all zero.

    ``torch.sqrt`` has an infinite derivative at 0, which turns into NaN (0 * inf) for an
    all-zero vector. The forward value is unchanged: where the sum is 0 the norm is 0.
    """
    sq = (y * y).sum(dim=dim, keepdim=True)
    zero = sq == 0
    return torch.where(zero, torch.zeros_like(sq), torch.sqrt(torch.where(zero, torch.ones_like(sq), sq)))


def normalize_channels(y: Tensor) -> Tensor:
    """``y / (sqrt(sum_c y^2) + 1e-10)``: unit channel vectors at every position.

    y: ``[N, C, H, W]`` float -> same shape and dtype. Exactly LPIPS's ``normalize_tensor``.
    """
    return y / (_safe_norm(y, dim=1) + NORM_EPS)


def _check_pair(y0: Tensor, y1: Tensor) -> None:
    if y0.dim() != 4 or y0.shape != y1.shape:
        raise ValueError(
            f"feature maps must be two [N, C, H, W] tensors of the same shape; got {tuple(y0.shape)} and {tuple(y1.shape)}"
        )


def spatial_map(y0: Tensor, y1: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """``sum_c w_c (ŷ0 - ŷ1)^2`` at every position: the map whose mean is :func:`spatial_term`
    (LPIPS's ``spatial=True`` output before upsampling).

    y0, y1: ``[N, C, H, W]`` float. weight: ``[C]`` non-negative, or None for w_c = 1.
    Returns ``[N, 1, H, W]`` in the input dtype.
    """
    _check_pair(y0, y1)
    diff = (normalize_channels(y0) - normalize_channels(y1)) ** 2
    if weight is not None:
        if weight.shape != (y0.shape[1],):
            raise ValueError(f"channel weights must have shape [{y0.shape[1]}], got {tuple(weight.shape)}")
        diff = diff * weight.to(diff.dtype).view(1, -1, 1, 1)
    return diff.sum(dim=1, keepdim=True)


def spatial_term(y0: Tensor, y1: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """``mean_hw sum_c w_c (ŷ0 - ŷ1)^2`` (the paper's Eq. 1; LPIPS with ``weight``).

    y0, y1: ``[N, C, H, W]`` float. weight: ``[C]`` non-negative, or None for w_c = 1.
    Returns ``[N]`` in the input dtype.
    """
    return spatial_map(y0, y1, weight).mean(dim=(1, 2, 3))


def meanpool_term(y0: Tensor, y1: Tensor) -> Tensor:
    """``(1/C) ||n(m0) - n(m1)||^2`` with ``m = mean_hw y`` (raw features), ``n(v) = v / (||v|| + 1e-10)``.

    y0, y1: ``[N, C, H, W]`` float -> ``[N]``.
    """
    _check_pair(y0, y1)
    m0 = y0.mean(dim=(2, 3))
    m1 = y1.mean(dim=(2, 3))
    n0 = m0 / (_safe_norm(m0, dim=1) + NORM_EPS)
    n1 = m1 / (_safe_norm(m1, dim=1) + NORM_EPS)
    return ((n0 - n1) ** 2).sum(dim=1) / y0.shape[1]


def gram(y: Tensor) -> Tensor:
    """``G = Ŷ Ŷᵀ / (H·W)`` of the channel-normalised features, Ŷ being ``[C, HW]``.

    y: ``[N, C, H, W]`` float -> ``[N, C, C]``. (The fused kernels never materialise this.)
    """
    n, c, h, w = y.shape
    flat = normalize_channels(y).reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (h * w)


def style_term(y0: Tensor, y1: Tensor) -> Tensor:
    """``(1/C^2) ||G0 - G1||_F^2`` of the Gram matrices of normalised features.

    y0, y1: ``[N, C, H, W]`` float -> ``[N]``.
    """
    _check_pair(y0, y1)
    c = y0.shape[1]
    return ((gram(y0) - gram(y1)) ** 2).sum(dim=(1, 2)) / (c * c)


def dists_term(y0: Tensor, y1: Tensor, weights: Tensor) -> Tensor:
    """DISTS's layer term ``sum_c alpha_c (1 - S1_c) + beta_c (1 - S2_c)`` (Ding et al., TPAMI 2020).

    With global means m, population variances v and covariance cov of each channel over the
    positions: ``S1 = (2 m0 m1 + c1) / (m0^2 + m1^2 + c1)``, ``S2 = (2 cov + c2) / (v0 + v1 + c2)``.
    Written in the equivalent difference form ``1 - S1 = (m0 - m1)^2 / (m0^2 + m1^2 + c1)`` and
    ``1 - S2 = var(y0 - y1) / (v0 + v1 + c2)``: no cancellation of terms near 1, equal maps give
    exactly 0, and the gradient is finite everywhere (no square root).

    y0, y1: ``[N, C, H, W]`` float. weights: ``[2, C]`` (alpha; beta), normalised over all layers so
    that the terms of every layer sum to ``1 - sum alpha S1 + beta S2``, the DISTS score.
    Returns ``[N]`` in the input dtype.
    """
    _check_pair(y0, y1)
    if weights.shape != (2, y0.shape[1]):
        raise ValueError(f"dists weights must have shape [2, {y0.shape[1]}] (alpha; beta), got {tuple(weights.shape)}")
    alpha, beta = weights.to(y0.dtype)
    m0, m1 = y0.mean(dim=(2, 3)), y1.mean(dim=(2, 3))
    v0 = ((y0 - m0[..., None, None]) ** 2).mean(dim=(2, 3))
    v1 = ((y1 - m1[..., None, None]) ** 2).mean(dim=(2, 3))
    diff = y0 - y1
    v_diff = ((diff - (m0 - m1)[..., None, None]) ** 2).mean(dim=(2, 3))
    one_minus_s1 = (m0 - m1) ** 2 / (m0 * m0 + m1 * m1 + DISTS_C1)
    one_minus_s2 = v_diff / (v0 + v1 + DISTS_C2)
    return (alpha * one_minus_s1 + beta * one_minus_s2).sum(dim=1)


def check_distance_names(names: Sequence[str]) -> tuple:
    """Validates and de-duplicates distance names, keeping their order."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    unknown = [n for n in names if n not in DISTANCES]
    if unknown or not names:
        raise ValueError(f"unknown distance(s) {unknown or '(none given)'}; choose from {', '.join(DISTANCES)}")
    return tuple(dict.fromkeys(names))


def check_lin(distances: Sequence[str], lin: Optional[Sequence[Tensor]], feats: Sequence[Tensor]) -> None:
    """``lpips`` needs one channel-weight vector per layer of ``feats`` (maps ``[N, C_l, H_l, W_l]``),
    with ``C_l`` elements (a kernel would otherwise read past it or use shifted weights)."""
    if "lpips" not in distances:
        return
    if lin is None or len(lin) != len(feats):
        got = "none (pass lin=...)" if lin is None else f"{len(lin)} vectors"
        raise ValueError(f"'lpips' needs one channel-weight vector per layer ({len(feats)}); got {got}")
    for i, (w, y) in enumerate(zip(lin, feats)):
        if w.numel() != y.shape[1]:
            raise ValueError(f"layer {i}: the lpips weights have {w.numel()} elements but the features have "
                             f"{y.shape[1]} channels; pass the lin weights of the trunk that made these features")


def check_dists_weights(distances: Sequence[str], weights: Optional[Sequence[Tensor]], feats: Sequence[Tensor]) -> None:
    """``dists`` needs one ``[2, C_l]`` (alpha; beta) tensor per layer of ``feats`` (maps ``[N, C_l, H_l, W_l]``)."""
    if "dists" not in distances:
        return
    if weights is None or len(weights) != len(feats):
        got = "none (pass dists_weights=...; a Scorer reads them with lin='dists')" if weights is None else f"{len(weights)}"
        raise ValueError(f"'dists' needs one alpha/beta tensor [2, C_l] per layer ({len(feats)}); got {got}")
    for i, (w, y) in enumerate(zip(weights, feats)):
        if tuple(w.shape) != (2, y.shape[1]):
            raise ValueError(f"layer {i}: the dists weights have shape {tuple(w.shape)} but the features have "
                             f"{y.shape[1]} channels: they must be [2, {y.shape[1]}] (alpha; beta) for this trunk's taps")


def layer_term(name: str, y0: Tensor, y1: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """One distance's term for one layer: ``[N, C, H, W]`` x 2 -> ``[N]``. ``weight``: ``[C]`` for
    ``lpips``, ``[2, C]`` for ``dists``, else unused."""
    if name == "dists":
        if weight is None:
            raise ValueError("the 'dists' distance needs its alpha/beta weights (lin='dists' on a Scorer)")
        return dists_term(y0, y1, weight)
    if name == "lpips":
        if weight is None:
            raise ValueError("the 'lpips' distance needs channel weights (lin); 'spatial' is the unweighted term")
        return spatial_term(y0, y1, weight)
    if name == "spatial":
        return spatial_term(y0, y1)
    if name == "meanpool":
        return meanpool_term(y0, y1)
    if name == "style":
        return style_term(y0, y1)
    raise ValueError(f"unknown distance {name!r}; choose from {', '.join(DISTANCES)}")


def layer_terms(
    feats0: Sequence[Tensor],
    feats1: Sequence[Tensor],
    distances: Sequence[str] = ("spatial",),
    lin: Optional[Sequence[Tensor]] = None,
    dists_weights: Optional[Sequence[Tensor]] = None,
) -> Dict[str, Tensor]:
    """Per-layer terms of every requested distance.

    feats0, feats1: L feature maps ``[N, C_l, H_l, W_l]`` each (shapes may differ across layers).
    lin: L channel-weight vectors ``[C_l]`` (needed by ``lpips`` only).
    dists_weights: L tensors ``[2, C_l]`` (alpha; beta; needed by ``dists`` only).
    Returns ``{name: [N, L]}`` in the features' dtype; ``.sum(1)`` gives the distance ``[N]``.
    """
    distances = check_distance_names(distances)
    if len(feats0) != len(feats1) or not feats0:
        raise ValueError(f"need the same non-zero number of layers on both sides; got {len(feats0)} and {len(feats1)}")
    check_lin(distances, lin, feats0)
    check_dists_weights(distances, dists_weights, feats0)
    return _checked_layer_terms(feats0, feats1, distances, lin, dists_weights)


def _checked_layer_terms(feats0, feats1, distances, lin, dists_weights) -> Dict[str, Tensor]:
    """``layer_terms`` on arguments already validated (the op validates a request once)."""
    out = {}
    weights = {"lpips": lin, "dists": dists_weights}
    for name in distances:
        cols = [
            layer_term(name, a, b, weights[name][i] if name in weights else None)
            for i, (a, b) in enumerate(zip(feats0, feats1))
        ]
        out[name] = torch.stack(cols, dim=1)
    return out


class TorchBackend(Backend):
    """The ``torch`` backend: this reference, on any device and dtype, differentiable."""

    name = "torch"

    def unsupported(self, request: DistanceRequest) -> List[str]:
        return []

    def compute(self, request: DistanceRequest) -> List[Terms]:
        # 16-bit features are widened (exactly) to float32: the reference never computes in 16 bits.
        feats = [[t.float() if t.dtype in (torch.bfloat16, torch.float16) else t for t in lst] for lst in request.feats]
        return [_checked_layer_terms(feats[0], other, request.distances, request.lin, request.dists_weights)
                for other in feats[1:]]
