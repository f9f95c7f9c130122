"""Backends of the distance op and the dispatch between them (DESIGN.md section 5).

``backend="auto"`` gives the request to the first backend, in preference order, that can take
it; an explicit backend that cannot run the request raises BackendUnavailable
with its reasons. The environment variable ``PERCEPTUAL_FAST_BACKEND`` overrides the argument.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Sequence, Tuple

import torch

from .base import Backend, BackendUnavailable, DistanceRequest, Terms
from .cpp import CppBackend
from .cuda import CudaBackend
from .torch_backend import TorchBackend
from .triton_backend import TritonBackend

ENV_VAR = "PERCEPTUAL_FAST_BACKEND"

BACKENDS: Dict[str, Backend] = {b.name: b for b in (CudaBackend(), TritonBackend(), CppBackend(), TorchBackend())}
"""Every backend by name."""

AUTO_ORDER = {"cuda": ("cuda", "triton", "torch"), "cpu": ("cpp", "torch")}
"""What ``auto`` tries for the features' device, fastest first; other devices get ``torch``."""


def requested_backend(backend: str = "auto") -> str:
    """The backend name in force: ``PERCEPTUAL_FAST_BACKEND`` if set, else ``backend``."""
    name = os.environ.get(ENV_VAR, "").strip() or backend
    if name != "auto" and name not in BACKENDS:
        source = f"{ENV_VAR}={name!r}" if os.environ.get(ENV_VAR, "").strip() else f"backend={name!r}"
        raise ValueError(f"{source} is not a backend; choose auto or one of {', '.join(BACKENDS)}")
    return name


def dispatch_plan(request: DistanceRequest, backend: str = "auto") -> Tuple[str, Dict[str, List[str]]]:
    """Which backend runs ``request``, and every backend's reasons for not taking it.

    ``auto`` picks the first backend in preference order that can take the whole request (the
    fused op runs as one call); an explicit backend that cannot raises BackendUnavailable.
    """
    name = requested_backend(backend)
    reasons = {b.name: b.unsupported(request) for b in BACKENDS.values()}
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
    batch = request.feats[0][0].shape[0]
    if impl.max_batch is None or batch <= impl.max_batch:
        return impl.compute(request)
    parts = [impl.compute(_batch_slice(request, start, start + impl.max_batch)) for start in range(0, batch, impl.max_batch)]
    return [{d: torch.cat([part[q][d] for part in parts]) for d in request.distances} for q in range(len(parts[0]))]


def _batch_slice(request: DistanceRequest, start: int, stop: int) -> DistanceRequest:
    """The same request on samples ``start:stop``."""
    return dataclasses.replace(request, feats=tuple(tuple(t[start:stop] for t in maps) for maps in request.feats))


def available_backends(request: DistanceRequest) -> Sequence[str]:
    """Names of the backends that can run ``request`` as a whole."""
    return [b.name for b in BACKENDS.values() if not b.unsupported(request)]


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "DistanceRequest",
    "Terms",
    "AUTO_ORDER",
    "ENV_VAR",
    "available_backends",
    "dispatch_plan",
    "requested_backend",
    "run_request",
]
