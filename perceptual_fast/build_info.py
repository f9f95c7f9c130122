"""``build_info()``: what this install was built with and what the machine it runs on can do.

    >>> pf.build_info()["cpu_isa"]          # the CPU kernel variant in use, e.g. 'avx512'

``perceptual-fast info`` prints it as a table.
"""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path
from typing import Dict, List

import torch

from .ops.conv2d_relu import onednn_missing
from .util.allocator import allocator_state


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _triton_version():
    if importlib.util.find_spec("triton") is None:
        return None
    import triton

    return triton.__version__


def build_info() -> Dict[str, object]:
    """A dict: ``cpu`` (model), ``cpu_features`` (name -> bool: SSE4.2, AVX2, FMA, AVX-512 F/BW/VL,
    AVX-512-BF16, AMX), ``cpu_isa_variants`` (compiled variant -> whether this CPU runs it),
    ``cpu_isa`` (the one in use), ``openmp_threads``, ``cuda_built`` and ``cuda_archs`` (of ``_C``),
    ``cuda_devices`` (what torch sees), ``triton`` (version or None), ``torch``, ``bf16_cpu_fast``
    (oneDNN's bf16 support: bf16 convolutions run natively), ``allocator`` (``util/allocator.py``),
    ``onednn_conv_relu`` (whether eager CPU inference fuses conv+ReLU, ``ops/conv2d_relu``),
    ``extension_error`` (why ``_C`` is missing, or None)."""
    info: Dict[str, object] = {"cpu": _cpu_model(), "machine": platform.machine(), "torch": torch.__version__,
                               "triton": _triton_version(), "extension_error": None}
    try:
        from . import _C
    except ImportError as err:
        info.update(cpu_features={}, cpu_isa_variants={}, cpu_isa=None, openmp_threads=None, cuda_built=False,
                    cuda_archs=[], extension_error=str(err))
    else:
        info.update(cpu_features=dict(_C.cpu_features()), cpu_isa_variants=dict(_C.cpu_isa_variants()), cpu_isa=_C.cpu_isa(),
                    openmp_threads=_C.max_threads(), cuda_built=bool(_C.has_cuda),
                    cuda_archs=list(getattr(_C, "cuda_archs", [])))
    info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    info["bf16_cpu_fast"] = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    info["allocator"] = allocator_state()
    info["onednn_conv_relu"] = onednn_missing() is None
    return info


def format_build_info(info: Dict[str, object]) -> List[str]:
    """``build_info()`` as lines of text."""
    features = info["cpu_features"]
    variants = info["cpu_isa_variants"]
    lines = [
        f"cpu            {info['cpu']} ({info['machine']})",
        "cpu features   " + (", ".join(f"{k} {'yes' if v else 'no'}" for k, v in features.items()) or "unknown"),
        "cpu kernels    " + (", ".join(f"{k}{'' if v else ' (this CPU cannot run it)'}" for k, v in variants.items())
                             or "none"),
        f"in use         {info['cpu_isa']} ({info['openmp_threads']} OpenMP threads)",
        f"cuda kernels   {'built for sm_' + ', sm_'.join(info['cuda_archs']) if info['cuda_built'] else 'not built'}; "
        f"devices: {', '.join(info['cuda_devices']) or 'none'}",
        f"triton         {info['triton'] or 'not installed'}",
        f"torch          {info['torch']}",
        f"allocator      {info['allocator']}",
        "inference      max pools without argmax indices " + ("(compiled)" if not info["extension_error"] else "(no: _C missing)")
        + "; conv+ReLU fused by oneDNN " + ("yes" if info["onednn_conv_relu"] else "no (torch's conv2d, then relu_)")
        + " (eager CPU float32, no grad)",
        "precisions     fp32 everywhere; bf16 " + ("runs natively here (oneDNN bf16)" if info["bf16_cpu_fast"] else
                                                    "on this CPU runs emulated convolutions (slow): use fp32 here"),
    ]
    if info["extension_error"]:
        lines.append(f"extension      perceptual_fast._C is missing: {info['extension_error']}")
    return lines


__all__ = ["build_info", "format_build_info"]
