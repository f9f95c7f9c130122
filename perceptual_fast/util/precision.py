"""The precision a Scorer runs in: names, the choice ``precision="auto"`` makes, and the warning for
a bf16 trunk the CPU would emulate.

- ``fp32`` / ``fp64``: trunk and distances in that dtype.
- ``bf16``: the trunk under bfloat16 autocast, distances accumulated and returned in float32.
  On a CPU without native bf16 convolutions (oneDNN reports none: no AVX-512-BF16 or AMX) torch
  emulates them, several times slower than fp32: a warning says so, once per process.
- ``fp16``: the trunk under float16 autocast, on CUDA only (GPUs without bf16).
- ``auto``: bf16 on CUDA devices that support it and on CPUs where oneDNN runs bf16 natively
  (AVX-512-BF16 or AMX: 2.2x fp32's speed for alexnet on an AVX-512-BF16 EPYC, bench/precision.py),
  else fp32.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

PRECISIONS = ("auto", "fp32", "fp64", "bf16", "fp16")

STORAGE = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.float32, "fp16": torch.float32}
"""The Scorer's dtype for each precision: its trunk weights, inputs and results."""

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of the precisions that run the trunk under autocast."""

_warned = set()


def cpu_bf16_native() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX-512-BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cuda_bf16(device: torch.device) -> bool:
    """Whether the CUDA device supports bf16."""
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision to run: ``precision`` checked against ``device`` (``auto`` resolved, see the
    module docstring); warns once when bf16 would be emulated on this CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if cuda_bf16(device) else "fp32"
        return "bf16" if device.type == "cpu" and cpu_bf16_native() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' runs on CUDA devices (GPUs without bf16), not {device.type}; "
                         "on the CPU use 'fp32' (or 'bf16' where it is native: perceptual-fast info)")
    if precision == "bf16" and device.type == "cpu" and not cpu_bf16_native() and "bf16-emulated" not in _warned:
        _warned.add("bf16-emulated")
        warnings.warn("precision 'bf16' on this CPU: oneDNN has no native bf16 here (no AVX-512-BF16 or AMX), so the "
                      "trunk's bf16 convolutions are emulated, several times slower than fp32 (7x for alexnet measured "
                      "on an AVX2 machine); use precision='fp32' or 'auto'", UserWarning, stacklevel=3)
    return precision


def autocast_dtype(precision: str) -> Optional[torch.dtype]:
    """The trunk's autocast dtype for a resolved precision, or None."""
    return AUTOCAST.get(precision)


__all__ = ["AUTOCAST", "PRECISIONS", "STORAGE", "autocast_dtype", "cpu_bf16_native", "cuda_bf16", "resolve_precision"]
