"""When a layer may take an inference-only CPU kernel (``max_pool2d``, ``conv2d_relu``).

Those kernels have no backward and are not traceable ops: they run only in eager mode, on CPU
tensors that need no gradient, in modules without hooks. Everywhere else (reverse- and forward-mode
autograd, ``torch.func`` transforms, TorchScript, ``torch.jit.trace``, ``torch.fx``,
``torch.compile``, ``torch.export``, dispatch modes) the layers run torch's own ops, so graphs and
archives hold portable ops only and every transform sees the ops it knows.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import FrozenSet, Iterator, List

import torch
import torch.autograd.forward_ad as forward_ad
import torch.fx._symbolic_trace as fx_trace
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

OPS = ("conv2d_relu", "max_pool2d")
_torch_only: contextvars.ContextVar[FrozenSet[str]] = contextvars.ContextVar("perceptual_fast_torch_ops_only",
                                                                             default=frozenset())


# Newer torch names fx's symbolic tracing alone (its is_fx_tracing logs a warning per call); older, is_fx_tracing.
_fx_tracing = getattr(fx_trace, "is_fx_symbolic_tracing", None) or fx_trace.is_fx_tracing


def _exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.6; is_compiling covers export before
    return bool(is_exporting and is_exporting())


def tracing() -> bool:
    """Whether something records or transforms the ops of the code that calls this, so it must see
    torch's own: ``torch.compile``/``torch.export``, ``torch.jit.trace``, ``torch.fx`` symbolic
    tracing, ``torch.func`` transforms, forward-mode AD, or a ``TorchDispatchMode`` (``FlopCounterMode``,
    fake tensors)."""
    return (torch.compiler.is_compiling() or _exporting() or torch.jit.is_tracing() or _fx_tracing()
            or torch._C._are_functorch_transforms_active() or getattr(forward_ad, "_current_level", -1) >= 0
            or _get_current_dispatch_mode() is not None)


def inference_reasons(op: str, *tensors: Tensor) -> List[str]:
    """Why ``tensors`` cannot take op ``op``'s inference-only CPU kernel (empty list: they can).

    Tracing is tested first: under it the tensors may be proxies that no other test can look at.
    """
    if tracing():
        return ["torch.compile/export, jit.trace, fx, torch.func, forward AD or a dispatch mode is at work "
                "(it must see torch's own ops)"]
    reasons = []
    if any(t.device.type != "cpu" for t in tensors):
        reasons.append("it runs on CPU tensors only")
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        reasons.append("it has no backward and a tensor requires grad")
    if op in _torch_only.get():
        reasons.append(f"torch_ops_only() is in force for {op}")
    return reasons


def plain(module: nn.Module, kind: type) -> bool:
    """Whether ``module`` is exactly a ``kind`` (not a subclass with a forward of its own) with no
    forward hooks, local or global: only then may a kernel stand in for its ``forward``."""
    return (type(module) is kind and not module._forward_hooks and not module._forward_pre_hooks
            and not nn.modules.module._global_forward_hooks and not nn.modules.module._global_forward_pre_hooks)


@contextlib.contextmanager
def torch_ops_only(*ops: str) -> Iterator[None]:
    """Within it (in this thread or task), the layers of ``ops`` (default: all of ``OPS``) run torch's
    own ops: to compare against, or to rule these kernels out."""
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"torch_ops_only: no inference op {sorted(unknown)}; the ops are {', '.join(OPS)}")
    token = _torch_only.set(_torch_only.get() | frozenset(ops or OPS))
    try:
        yield
    finally:
        _torch_only.reset(token)
