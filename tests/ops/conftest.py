"""Fixtures shared by the ops' tests: ``variant`` runs a test once per compiled CPU kernel variant."""

import pytest

from perceptual_fast import _C

VARIANTS = [name for name, _ in _C.cpu_isa_variants()]


@pytest.fixture(params=VARIANTS)
def variant(request):
    """Each compiled variant in turn (skipped, with the CPU's features, where this CPU cannot run it)."""
    if not dict(_C.cpu_isa_variants())[request.param]:
        pytest.skip(f"this CPU cannot run the {request.param} kernels: {dict(_C.cpu_features())}")
    previous = _C.set_cpu_isa(request.param)
    yield request.param
    _C.set_cpu_isa(previous)
