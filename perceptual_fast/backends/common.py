"""Checks shared by the kernel backends."""

from __future__ import annotations

from typing import Collection, List

import torch

from .base import DistanceRequest


def dtype_and_grad_reasons(request: DistanceRequest, dtypes: Collection[torch.dtype]) -> List[str]:
    """Reasons a kernel without backward that takes one dtype among ``dtypes`` cannot run ``request``."""
    reasons = []
    seen = {t.dtype for t in request.tensors}
    if len(seen) != 1 or not seen <= set(dtypes):
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        reasons.append(f"it takes features of one dtype among {names}, got {sorted(map(str, seen))}")
    if request.needs_grad:
        reasons.append("it has no backward and gradients are needed")
    return reasons
