"""When a layer may take an inference-only CPU kernel (``max_pool2d``, ``conv2d_relu``).

Those kernels have no backward and are not traceable ops: they run only in eager mode, on CPU
tensors that need no gradient. Everywhere else (autograd, TorchScript, ``torch.compile``,
``torch.export``) the layers run torch's own ops, so archives and graphs hold portable ops only.
"""

from __future__ import annotations

import contextlib
from typing import FrozenSet, Iterator, List

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

OPS = ("conv2d_relu", "max_pool2d")
_torch_only: FrozenSet[str] = frozenset()


def tracing() -> bool:
    """Whether ``torch.compile`` or ``torch.export`` is tracing the code that calls this, or a
    ``TorchDispatchMode`` (``FlopCounterMode``, fake tensors) sees every op: it would not know ours."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or _get_current_dispatch_mode() is not None


def inference_reasons(op: str, *tensors: Tensor) -> List[str]:
    """Why ``tensors`` cannot take op ``op``'s inference-only CPU kernel (empty list: they can)."""
    reasons = []
    if any(t.device.type != "cpu" for t in tensors):
        reasons.append("it runs on CPU tensors only")
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        reasons.append("it has no backward and a tensor requires grad")
    if tracing():
        reasons.append("torch.compile/torch.export or a dispatch mode is tracing (graphs keep torch's own ops)")
    if op in _torch_only:
        reasons.append(f"torch_ops_only() is in force for {op}")
    return reasons


@contextlib.contextmanager
def torch_ops_only(*ops: str) -> Iterator[None]:
    """Within it, the layers of ``ops`` (default: all of ``OPS``) run torch's own ops: to compare
    against, or to rule these kernels out."""
    global _torch_only
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"torch_ops_only: no inference op {sorted(unknown)}; the ops are {', '.join(OPS)}")
    previous, _torch_only = _torch_only, _torch_only | frozenset(ops or OPS)
    try:
        yield
    finally:
        _torch_only = previous
