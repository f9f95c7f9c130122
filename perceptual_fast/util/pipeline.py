"""The streaming input pipeline: image pairs decoded by worker threads into batches of one size,
ready for the trunk, in bounded memory.

Decoding (PIL releases the GIL) runs in a thread pool while the caller's thread runs the trunk on
the previous batch. At most ``window`` pairs are decoded ahead of the caller, and pairs wait in
per-size buckets until a bucket fills a batch; when more than ``max_pending`` decoded pairs wait,
the fullest bucket goes out as a smaller batch. So the decoded pairs held at any time are at most
``window + max_pending`` (plus the batch the caller holds), whatever the number of pairs: memory
does not grow with the data. Pairs that cannot be read come out as failures, in order, and the
run goes on.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Deque, Iterable, Iterator, List, Optional, Tuple

import torch

from .images import read_image

Pair = Tuple[str, Path, Path]
"""(name, path of a, path of b)."""


@dataclass
class PairBatch:
    """A batch for the trunk: ``a``, ``b`` uint8 ``[n, 3, H, W]`` (one size), and the pairs' names and paths;
    or, with ``a`` None, pairs that failed (``errors``: one message per pair)."""

    pairs: List[Pair]
    a: Optional[torch.Tensor] = None
    b: Optional[torch.Tensor] = None
    errors: List[str] = field(default_factory=list)


def _decode(pair: Pair, size: Optional[int], notes: set) -> tuple:
    """(pair, a, b, None) with both images decoded, or (pair, None, None, why not)."""
    _, pa, pb = pair
    try:
        ia, ib = read_image(pa, size, notes), read_image(pb, size, notes)
    except ValueError as err:
        return pair, None, None, str(err)
    if ia.shape != ib.shape:
        return pair, None, None, (f"images are {tuple(ia.shape[1:])} and {tuple(ib.shape[1:])} pixels; "
                                  "pass --size N to resize both")
    return pair, ia, ib, None


class DecodeStats:
    """What the pipeline saw: the most decoded pairs it held at once (for the memory bound), and the
    conversion notes of ``read_image`` (e.g. alpha dropped), as (note, path) pairs."""

    def __init__(self) -> None:
        self.peak_held = 0
        self.notes: set = set()


def decoded_batches(pairs: Iterable[Pair], batch_size: int, size: Optional[int] = None, workers: int = 2,
                    window: Optional[int] = None, max_pending: Optional[int] = None, pin_memory: bool = False,
                    stats: Optional[DecodeStats] = None) -> Iterator[PairBatch]:
    """Batches of decoded pairs (see the module docstring), then the partly filled ones at the end.

    batch_size: pairs per batch. size: resize every image to size x size. workers: decode threads.
    window: pairs decoded ahead (default 2 x batch_size). max_pending: decoded pairs waiting in
    buckets before the fullest one goes out early (default 2 x batch_size). pin_memory: page-locked
    batches, for non-blocking copies to a GPU.
    """
    window = window or 2 * batch_size
    max_pending = max_pending or 2 * batch_size
    stats = stats if stats is not None else DecodeStats()
    notes = stats.notes
    buckets: "OrderedDict[tuple, List[tuple]]" = OrderedDict()
    pending = 0

    def batch_of(items: List[tuple]) -> PairBatch:
        a = torch.stack([it[1] for it in items])
        b = torch.stack([it[2] for it in items])
        if pin_memory:
            a, b = a.pin_memory(), b.pin_memory()
        return PairBatch([it[0] for it in items], a, b)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        ahead: Deque = deque()
        source = iter(pairs)
        exhausted = False
        while True:
            while not exhausted and len(ahead) < window:
                pair = next(source, None)
                if pair is None:
                    exhausted = True
                    break
                ahead.append(pool.submit(_decode, pair, size, notes))
            if not ahead:
                break
            pair, ia, ib, error = ahead.popleft().result()
            if error is not None:
                yield PairBatch([pair], errors=[error])
                continue
            bucket = buckets.setdefault(tuple(ia.shape), [])
            bucket.append((pair, ia, ib))
            pending += 1
            stats.peak_held = max(stats.peak_held, pending + len(ahead))
            if len(bucket) >= batch_size:
                del buckets[tuple(ia.shape)]
                pending -= len(bucket)
                yield batch_of(bucket)
            elif pending > max_pending:
                key = max(buckets, key=lambda k: len(buckets[k]))
                full = buckets.pop(key)
                pending -= len(full)
                yield batch_of(full)
        for bucket in buckets.values():
            yield batch_of(bucket)


__all__ = ["DecodeStats", "Pair", "PairBatch", "decoded_batches"]
