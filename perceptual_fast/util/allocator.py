"""Keeping freed CPU memory in the process, so trunk passes stop paying page faults for it.

A CPU trunk pass allocates and frees tensors of many megabytes. glibc's defaults hand much of
that memory back to the kernel (the heap is trimmed, large blocks are unmapped), and the next
pass faults the same pages in again. Measured with ``bench/pass_size.py`` (64x64 images, 192 per
pass): resnet50 took 44,000 page faults per pass by default and 1,200 tuned, vgg16 212,000 and
69,000, and the bare trunks ran 3-8% faster; squeezenet1_1's 192-image pass went from 2,222 to
3,477 images/s. jemalloc and tcmalloc (``LD_PRELOAD``) do the same; this is the glibc equivalent,
set from inside the process.

``tune_cpu_allocator()`` sets glibc's ``M_MMAP_THRESHOLD`` (32 MiB: blocks up to that size come
from the heap and are reused), ``M_TRIM_THRESHOLD`` (1 GiB of free heap kept before trimming) and
``M_TOP_PAD`` (the heap grows 256 MiB at a time). Memory use stays bounded by the peak working
set plus what is kept. The CLI calls it at startup; library users may call it once
(``pf.tune_cpu_allocator()``); it is process-wide, so the library does not do it on its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Optional

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30, "top_pad": 256 << 20}
ENV_SWITCH = "PERCEPTUAL_FAST_ALLOCATOR"  # "default" leaves the allocator alone

_state: Optional[str] = None


def _glibc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def _preloaded() -> bool:
    """Whether an allocator that keeps freed memory is preloaded (jemalloc, tcmalloc, mimalloc)."""
    return any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc"))


def tune_cpu_allocator() -> str:
    """Applies ``SETTINGS`` to glibc malloc once per process; returns what the allocator now is.

    Leaves the allocator alone (and says why) when ``PERCEPTUAL_FAST_ALLOCATOR=default``, when
    the user set glibc's own ``MALLOC_*`` variables or preloads another allocator, or when the C
    library is not glibc.
    """
    global _state
    if _state is not None:
        return _state
    if os.environ.get(ENV_SWITCH, "") == "default":
        _state = f"glibc defaults ({ENV_SWITCH}=default)"
    elif any(k.startswith("MALLOC_") for k in os.environ) or "GLIBC_TUNABLES" in os.environ:
        _state = "as the MALLOC_*/GLIBC_TUNABLES environment sets it"
    elif _preloaded():
        _state = f"preloaded ({os.environ['LD_PRELOAD']})"
    elif (libc := _glibc()) is None:
        _state = "the C library's own (not glibc)"
    else:
        done = all(libc.mallopt(option, value) == 1 for option, value in
                   ((_M_MMAP_THRESHOLD, SETTINGS["mmap_threshold"]), (_M_TRIM_THRESHOLD, SETTINGS["trim_threshold"]),
                    (_M_TOP_PAD, SETTINGS["top_pad"])))
        _state = "glibc, tuned: freed memory kept (mmap threshold 32 MiB, trim threshold 1 GiB, top pad 256 MiB)" \
            if done else "glibc defaults (mallopt refused the settings)"
    return _state


def keeps_freed_memory() -> bool:
    """Whether this process's allocator keeps freed memory: tuned here, or jemalloc/tcmalloc/mimalloc preloaded."""
    return bool(_state and _state.startswith("glibc, tuned")) or _preloaded()


def allocator_state() -> str:
    """What ``tune_cpu_allocator`` did in this process, or that it has not been called."""
    return _state or "glibc defaults, or another allocator (perceptual_fast did not tune it)"
