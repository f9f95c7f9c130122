"""How many images one trunk pass takes, and how many CPU threads a Scorer's calls use.

On a CPU, whether a large batch should be split into several trunk passes depends on the
allocator more than on caches (``bench/pass_size.py``, 64x64 images, 192 per batch). With glibc's
defaults, every pass faults its freed memory in again, and the cost grows with the pass:
squeezenet1_1's 192-image pass ran at 55% of its 64-image rate, resnet50's at 90%. Once
``tune_cpu_allocator()`` keeps freed memory (or jemalloc/tcmalloc is preloaded), 192-image passes
are as fast as any for those trunks, and only VGG-16 still gains from 48-image passes (8%).
AlexNet gains nothing either way. The table is in pixels, so a 128x128 batch gets a quarter of
the 64x64 pass size. GPUs want the whole batch, so ``auto`` does not split there.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, List, Optional, Sequence, Union

import torch

from .allocator import keeps_freed_memory

PassSpec = Union[None, int, str]

_SIDE = 64 * 64
# Pixels per trunk pass on a CPU (64x64 images times the measured best pass size), by trunk name
# or family, for each allocator behaviour; trunks not listed run the whole batch in one pass.
CPU_PASS_PIXELS = {
    "glibc defaults": {"vgg16": 48 * _SIDE, "squeezenet1_1": 64 * _SIDE, "resnet": 64 * _SIDE},
    "keeps freed memory": {"vgg16": 48 * _SIDE},
}


def is_count(value: object) -> bool:
    """Whether ``value`` is a positive int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_pass_size(pass_size: PassSpec) -> PassSpec:
    """``"auto"``, None (the whole batch) or a positive int; anything else is an error naming them."""
    if pass_size is None or pass_size == "auto" or is_count(pass_size):
        return pass_size
    raise ValueError(f"pass_size must be 'auto', None (whole batch) or a positive number of images; got {pass_size!r}")


def images_per_pass(pass_size: PassSpec, trunk: Sequence[str], device: torch.device, height: int, width: int) -> Optional[int]:
    """The most images one trunk pass takes (None: no limit).

    pass_size: a Scorer's setting; ``"auto"`` reads ``CPU_PASS_PIXELS`` for the first of ``trunk``'s
    keys it lists (its name, then its family; a trunk it does not list is not split) under the
    allocator in force, on a CPU, and never splits on other devices.
    """
    if pass_size != "auto" or device.type != "cpu":
        return None if pass_size == "auto" else pass_size
    table = CPU_PASS_PIXELS["keeps freed memory" if keeps_freed_memory() else "glibc defaults"]
    pixels = next((table[key] for key in trunk if key in table), None)
    return None if pixels is None else max(1, pixels // (height * width))


def pass_sizes(batch: int, limit: Optional[int]) -> List[int]:
    """``batch`` images split into the fewest passes of at most ``limit``, as equal as they can be
    (200 by 64: 50, 50, 50, 50, not 64, 64, 64, 8)."""
    if limit is None or batch <= limit:
        return [batch]
    count = math.ceil(batch / limit)
    base, extra = divmod(batch, count)
    return [base + 1] * extra + [base] * (count - extra)


@contextlib.contextmanager
def cpu_threads(count: Optional[int]) -> Iterator[None]:
    """Runs the body with ``torch.set_num_threads(count)`` (None: as it is), restoring the previous count.

    torch's thread count is process-wide: it applies to every thread of the process while the body runs.
    """
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
