"""Backends of the distance op and the dispatch between them (DESIGN.md section 5).

``backend="auto"`` gives the request to the first backend, in preference order, that can take
it; an explicit backend that cannot run the request raises BackendUnavailable
with its reasons. The environment variable ``PERCEPTUAL_FAST_BACKEND`` overrides the argument.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

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
    """One ``{name: [N, L]}`` per comparison (a-b, then a-c for a triplet), on the dispatched backend."""
    name, _ = dispatch_plan(request, backend)
    return BACKENDS[name].compute(request)


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
