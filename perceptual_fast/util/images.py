"""Image files: PIL decode to uint8 ``[3, H, W]`` (optionally resized), and pairing two folders by name."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_image(path: Path, size: Optional[int] = None) -> torch.Tensor:
    """Decodes ``path`` to RGB uint8 ``[3, H, W]``; ``size`` resizes to size x size (PIL bilinear)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((size, size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def pair_paths(a: Path, b: Path) -> List[Tuple[str, Path, Path]]:
    """Two files -> one pair; two folders -> pairs of image files with the same name.

    A name present in only one folder is an error that lists it (never paired by position).
    """
    if a.is_file() and b.is_file():
        return [(a.name if a.name == b.name else f"{a.name} | {b.name}", a, b)]
    if a.is_dir() and b.is_dir():
        names_a = {p.name for p in a.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        names_b = {p.name for p in b.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        only = sorted(names_a ^ names_b)
        if only:
            raise ValueError(
                f"folders {str(a)!r} and {str(b)!r} must hold the same image names; unmatched: {', '.join(only[:10])}"
                + (f" ... ({len(only) - 10} more)" if len(only) > 10 else "")
            )
        if not names_a:
            raise ValueError(f"folder {str(a)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return [(n, a / n, b / n) for n in sorted(names_a)]
    missing = [str(p) for p in (a, b) if not p.exists()]
    if missing:
        raise ValueError(f"no such file or folder: {', '.join(missing)}")
    raise ValueError("give two image files or two folders, not one of each")
