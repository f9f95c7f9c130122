"""Atomic file writes: a killed job leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Union


def write_atomically(path: Union[str, os.PathLike], write: Callable[[Path], object]) -> Path:
    """Calls ``write(tmp)`` on a temporary name beside ``path``, then renames it to ``path`` (``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(path: Union[str, os.PathLike], text: str) -> Path:
    """Writes ``text`` to ``path`` atomically (see ``write_atomically``)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text))
