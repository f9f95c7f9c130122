"""A one-line progress report on stderr for long jobs (no dependency)."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    """``label: done/total unit (rate/s, eta)`` on stderr, redrawn in place on a terminal and
    written as a new line at most every ``interval`` seconds otherwise. Silent when not ``enabled``."""

    def __init__(self, total: int, label: str, unit: str = "items", enabled: bool = True,
                 stream: Optional[TextIO] = None, interval: float = 0.5):
        self.total, self.label, self.unit, self.enabled = int(total), label, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval if self.stream.isatty() else max(interval, 5.0)
        self.done = 0
        self.start = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.interval or self.done >= self.total):
            self.last = now
            self._write(now)

    def _write(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        line = f"{self.label}: {self.done}/{self.total} {self.unit} ({rate:.0f}/s, {elapsed:.0f} s, eta {eta:.0f} s)"
        end = "\r" if self.stream.isatty() and self.done < self.total else "\n"
        self.stream.write(("\r" if self.stream.isatty() else "") + line + end)
        self.stream.flush()
