"""``fused_distance``: every requested distance for every layer of a pair or a triplet, in one call.

The op the Scorer calls. This folder holds all of it: the API and the dispatch (here), the plain
PyTorch reference (``reference.py``, also the differentiable ``torch`` backend), and one small
wrapper per kernel backend: ``cpu.py`` (``cpp``, with a backward) and ``cuda.py`` on the compiled
``_C`` (both through ``extension.py``), ``triton.py`` (launcher of kernels/triton/fused_distance.py);
``autograd.py`` runs a backend that has a backward under autograd. The
kernels themselves are in kernels/ and csrc/; the tests in tests/ops/fused_distance/; the
benchmark in bench/fused_distance.py. docs/design.md states the numerical contract.

``backend="auto"`` gives the request to the first backend, in preference order for the features'
device, that can take it; an explicit backend that cannot run the request raises
BackendUnavailable with its reasons. ``PERCEPTUAL_FAST_BACKEND`` overrides the argument. A
triplet is one request: backends that fuse read the reference maps once for both comparisons.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .autograd import differentiable_compute
from .backend import Backend, BackendUnavailable, DistanceRequest, Terms
from .cpu import CppBackend
from .cuda import CudaBackend
from .reference import DISTANCES, TorchBackend, check_distance_names, check_dists_weights, check_lin
from .triton import TritonBackend

ENV_VAR = "PERCEPTUAL_FAST_BACKEND"

BACKENDS: Dict[str, Backend] = {b.name: b for b in (CudaBackend(), TritonBackend(), CppBackend(), TorchBackend())}
"""Every backend by name."""

AUTO_ORDER = {"cuda": ("cuda", "triton", "torch"), "cpu": ("cpp", "torch")}
"""What ``auto`` tries for the features' device, fastest first; other devices get ``torch``."""

_REASONS: Dict[tuple, Dict[str, List[str]]] = {}


def requested_backend(backend: str = "auto") -> str:
    """The backend name in force: ``PERCEPTUAL_FAST_BACKEND`` if set, else ``backend``."""
    name = os.environ.get(ENV_VAR, "").strip() or backend
    if name != "auto" and name not in BACKENDS:
        source = f"{ENV_VAR}={name!r}" if os.environ.get(ENV_VAR, "").strip() else f"backend={name!r}"
        raise ValueError(f"{source} is not a backend; choose auto or one of {', '.join(BACKENDS)}")
    return name


def backend_reasons(request: DistanceRequest) -> Dict[str, List[str]]:
    """Every backend's reasons for not taking ``request`` (empty list: it can).

    What a backend can take depends only on the request's kind: its devices, its dtypes, whether
    gradients are needed (and whether Triton is interpreting), so the reasons are computed once per
    kind and kept.
    """
    tensors = request.tensors
    lin_grad = any(w.requires_grad for w in request.weights)
    kind = (tuple(sorted({str(t.device) for t in tensors})), tuple(sorted({str(t.dtype) for t in tensors})),
            request.needs_grad, lin_grad, os.environ.get("TRITON_INTERPRET"))
    if kind not in _REASONS:
        _REASONS[kind] = {b.name: b.unsupported(request) for b in BACKENDS.values()}
    return _REASONS[kind]


def dispatch_plan(request: DistanceRequest, backend: str = "auto") -> Tuple[str, Dict[str, List[str]]]:
    """Which backend runs ``request``, and every backend's reasons for not taking it.

    ``auto`` picks the first backend in preference order that can take the whole request (the
    fused op runs as one call); an explicit backend that cannot raises BackendUnavailable.
    """
    name = requested_backend(backend)
    reasons = backend_reasons(request)
    if name == "auto":
        device = request.feats[0][0].device.type
        return next(b for b in AUTO_ORDER.get(device, ("torch",)) if not reasons[b]), reasons
    if reasons[name]:
        raise BackendUnavailable(f"backend {name!r} cannot run this request: " + "; ".join(reasons[name]))
    return name, reasons


def run_request(request: DistanceRequest, backend: str = "auto") -> List[Terms]:
    """One ``{name: [N, L]}`` per comparison (a-b, then a-c for a triplet), on the dispatched backend.

    A batch larger than the backend's ``max_batch`` runs as consecutive slices of the batch (views,
    no copies), whose results are concatenated.
    """
    name, _ = dispatch_plan(request, backend)
    impl = BACKENDS[name]
    # a backend with its own backward runs under autograd when gradients are needed (autograd.py)
    compute = (lambda r: differentiable_compute(impl, r)) if impl.has_backward and request.needs_grad else impl.compute
    batch = request.feats[0][0].shape[0]
    if impl.max_batch is None or batch <= impl.max_batch:
        return compute(request)
    parts = [compute(_batch_slice(request, start, start + impl.max_batch)) for start in range(0, batch, impl.max_batch)]
    return [{d: torch.cat([part[q][d] for part in parts]) for d in request.distances} for q in range(len(parts[0]))]


def _batch_slice(request: DistanceRequest, start: int, stop: int) -> DistanceRequest:
    """The same request on samples ``start:stop``."""
    return dataclasses.replace(request, feats=tuple(tuple(t[start:stop] for t in maps) for maps in request.feats))


def available_backends(request: DistanceRequest) -> Sequence[str]:
    """Names of the backends that can run ``request`` as a whole."""
    return [name for name, reasons in backend_reasons(request).items() if not reasons]


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
    dists_weights: Optional[Sequence[Tensor]] = None,
) -> Union[Terms, Tuple[Terms, Terms]]:
    """Per-layer distance terms of a pair (a, b), or of a triplet (a vs b and a vs c).

    feats_*: L tensors ``[N, C_l, H_l, W_l]`` each (shapes may differ across layers, not across
    a/b/c). distances: names among lpips, spatial, meanpool, style, dists. lin: L vectors ``[C_l]``
    (lpips only). dists_weights: L tensors ``[2, C_l]``, alpha and beta normalised over all layers
    (dists only; ``lin.load_dists_weights``). backend: ``auto``, ``cpp``, ``triton``, ``cuda`` or
    ``torch`` (``PERCEPTUAL_FAST_BACKEND`` overrides).
    Returns ``{name: [N, L]}`` for a pair; ``(terms_ab, terms_ac)`` for a triplet.
    Differentiable: when gradients are needed, ``auto`` uses a backend with a backward.
    """
    names = check_distance_names(distances)
    _check_layers(feats_a, feats_b, "feats_b")
    if feats_c is not None:
        _check_layers(feats_a, feats_c, "feats_c")
    check_lin(names, lin, feats_a)
    check_dists_weights(names, dists_weights, feats_a)
    feats = tuple(tuple(f) for f in (feats_a, feats_b, feats_c) if f is not None)
    terms = run_request(DistanceRequest(feats, names, lin, dists_weights), backend)
    return terms[0] if feats_c is None else (terms[0], terms[1])


__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "DISTANCES",
    "ENV_VAR",
    "Backend",
    "BackendUnavailable",
    "DistanceRequest",
    "Terms",
    "available_backends",
    "backend_reasons",
    "dispatch_plan",
    "fused_distance",
    "requested_backend",
    "run_request",
]
