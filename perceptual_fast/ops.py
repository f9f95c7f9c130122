"""``fused_distance``: every requested distance for every layer of a pair or a triplet.

The one op the Scorer calls; backends implement it (see perceptual_fast.backends). A triplet is
one request: backends that fuse read the reference maps once for both comparisons.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

from torch import Tensor

from .backends import DistanceRequest, Terms, run_request
from .distances import check_distance_names, check_lin


def _check_layers(feats_a: Sequence[Tensor], other: Sequence[Tensor], label: str) -> None:
    if len(feats_a) != len(other) or not feats_a:
        raise ValueError(f"feats_a and {label} need the same non-zero number of layers; got {len(feats_a)} and {len(other)}")
    for i, (a, b) in enumerate(zip(feats_a, other)):
        if a.dim() != 4 or a.shape != b.shape:
            raise ValueError(f"layer {i}: feats_a {tuple(a.shape)} and {label} {tuple(b.shape)} must be equal [N, C, H, W]")
        if a.shape[1] == 0 or a.shape[2] * a.shape[3] == 0:
            raise ValueError(f"layer {i}: feature maps {tuple(a.shape)} have no channels or no positions; "
                             "every layer needs C >= 1 and H * W >= 1")


def fused_distance(
    feats_a: Sequence[Tensor],
    feats_b: Sequence[Tensor],
    feats_c: Optional[Sequence[Tensor]] = None,
    distances: Union[str, Sequence[str]] = ("spatial",),
    lin: Optional[Sequence[Tensor]] = None,
    backend: str = "auto",
) -> Union[Terms, Tuple[Terms, Terms]]:
    """Per-layer distance terms of a pair (a, b), or of a triplet (a vs b and a vs c).

    feats_*: L tensors ``[N, C_l, H_l, W_l]`` each (shapes may differ across layers, not across
    a/b/c). distances: names among lpips, spatial, meanpool, style. lin: L vectors ``[C_l]``
    (lpips only). backend: ``auto``, ``cpp``, ``triton``, ``cuda`` or ``torch`` (``PERCEPTUAL_FAST_BACKEND``
    overrides).
    Returns ``{name: [N, L]}`` for a pair; ``(terms_ab, terms_ac)`` for a triplet.
    Differentiable: when gradients are needed, ``auto`` uses a backend with a backward.
    """
    names = check_distance_names(distances)
    _check_layers(feats_a, feats_b, "feats_b")
    if feats_c is not None:
        _check_layers(feats_a, feats_c, "feats_c")
    check_lin(names, lin, feats_a)
    feats = tuple(tuple(f) for f in (feats_a, feats_b, feats_c) if f is not None)
    terms = run_request(DistanceRequest(feats, names, lin), backend)
    return terms[0] if feats_c is None else (terms[0], terms[1])
