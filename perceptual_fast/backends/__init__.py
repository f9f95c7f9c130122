"""Backends of the distance op and the dispatch between them (DESIGN.md section 5).

``backend="auto"`` gives each requested distance to the first backend, in preference order,
that can take it; an explicit backend that cannot run the request raises BackendUnavailable
with its reasons. The environment variable ``PERCEPTUAL_FAST_BACKEND`` overrides the argument.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

from .base import Backend, BackendUnavailable, DistanceRequest
from .cpp import CppBackend
from .torch_backend import TorchBackend

ENV_VAR = "PERCEPTUAL_FAST_BACKEND"

BACKENDS: Dict[str, Backend] = {b.name: b for b in (CppBackend(), TorchBackend())}
"""Every backend by name, in the order ``auto`` prefers them (fastest first, the reference last)."""


def requested_backend(backend: str = "auto") -> str:
    """The backend name in force: ``PERCEPTUAL_FAST_BACKEND`` if set, else ``backend``."""
    name = os.environ.get(ENV_VAR, "").strip() or backend
    if name != "auto" and name not in BACKENDS:
        source = f"{ENV_VAR}={name!r}" if os.environ.get(ENV_VAR, "").strip() else f"backend={name!r}"
        raise ValueError(f"{source} is not a backend; choose auto or one of {', '.join(BACKENDS)}")
    return name


def dispatch_plan(request: DistanceRequest, backend: str = "auto") -> Tuple[List[Tuple[str, tuple]], Dict[str, List[str]]]:
    """Which backend computes which distances, and why the others were passed over.

    Returns ``([(backend_name, distances), ...], {backend_name: reasons})``; the reasons are
    those each backend gave for the whole request.
    """
    name = requested_backend(backend)
    reasons = {b.name: b.unsupported(request) for b in BACKENDS.values()}
    if name != "auto":
        if reasons[name]:
            raise BackendUnavailable(f"backend {name!r} cannot run this request: " + "; ".join(reasons[name]))
        return [(name, request.distances)], reasons
    assigned: Dict[str, List[str]] = {}
    for distance in request.distances:
        one = request.restricted([distance])
        chosen = next(b.name for b in BACKENDS.values() if not b.unsupported(one))
        assigned.setdefault(chosen, []).append(distance)
    return [(b, tuple(d)) for b, d in assigned.items()], reasons


def run_request(request: DistanceRequest, backend: str = "auto") -> Dict[str, object]:
    """Computes ``{name: [N, L]}`` for every requested distance, each on its dispatched backend."""
    plan, _ = dispatch_plan(request, backend)
    out: Dict[str, object] = {}
    for name, distances in plan:
        out.update(BACKENDS[name].layer_terms(request.restricted(distances)))
    return {d: out[d] for d in request.distances}


def available_backends(request: DistanceRequest) -> Sequence[str]:
    """Names of the backends that can run ``request`` as a whole."""
    return [b.name for b in BACKENDS.values() if not b.unsupported(request)]


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "DistanceRequest",
    "ENV_VAR",
    "available_backends",
    "dispatch_plan",
    "requested_backend",
    "run_request",
]
