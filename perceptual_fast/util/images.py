"""Image files: decode to uint8 ``[3, H, W]`` (optionally resized) whatever the file's mode and bit depth,
pair two folders by name (or by relative path), and read a CSV/TSV list of pairs.

Conversion to 8-bit RGB (``read_image``):

- 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``LAB``, ...) go through PIL's ``convert("RGB")``.
- 16-bit data (``I;16`` / ``I;16B`` / ``I;16L`` grey, 16-bit RGB(A) and grey+alpha PNG/TIFF) is scaled
  with rounding, ``round(v * 255 / 65535)``, never clipped. PIL opens 16-bit RGB(A) PNGs (and TIFFs) as
  8-bit ``RGB``/``RGBA`` keeping only each sample's high byte (a truncation, ``v >> 8``); the low bytes
  are recovered here by decoding the file a second time with the unpacker of the other byte order,
  so the full 16 bits are rounded. Should that second decode fail (a codec PIL cannot re-run so), the
  high bytes are used and a note says so; premultiplied 16-bit ``RGBa`` TIFFs also keep PIL's 8 bits
  (noted too).
- ``I`` (32-bit signed int): treated as 16-bit (above) when its maximum is at most 65535, else the range
  [0, 2**31 - 1] is scaled to [0, 255] (with a note); negatives are clipped to 0 (with a note).
- ``F`` (32-bit float): the convention is [0, 1]; values outside are clipped (with a note), NaN is 0.
- Alpha (``RGBA``, ``LA``, ``PA``, a palette or colour key with transparency) is dropped, not
  composited: the colour channels are kept as they are, and a note is recorded.

Notes: pass a set as ``notes``; each image that needed one adds ``(note, str(path))``, so the caller can
print one line per kind of note with the number of images (``format_notes``). A plain ``set.add``
is atomic, so decode threads can share one set.
"""

from __future__ import annotations

import csv
import os
import re
import struct
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, List, Optional, Set, Tuple

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

NOTE_ALPHA = "alpha channel dropped"
NOTE_8BIT = "16-bit colour read at 8-bit precision (PIL kept only the high bytes)"
NOTE_FLOAT_CLIPPED = "float values outside [0, 1] clipped"
NOTE_NEGATIVE = "negative integer values clipped to 0"
NOTE_INT32 = "32-bit integer values scaled from [0, 2147483647]"

_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}
# 16-bit colour rawmode -> the same with the other byte order: decoding a 16-bit sample with it yields its
# low byte instead of the high one (same bits per pixel, so PNG's filters are undone identically).
# ``;16N`` (native order, e.g. libtiff-decoded TIFFs) is the host's order.
_OTHER_ORDER = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}
_LOW_BYTE_RAWMODES = {f"{m};16{o}": f"{m};16{_OTHER_ORDER[o]}" for m in ("RGB", "RGBA", "RGBX") for o in "BLN"}
# 16-bit grey + alpha (PIL: mode RGBA): the 8-bit rawmode "RGBA" has the same 32 bits per pixel and
# hands over all four bytes, (L high, L low, A high, A low).
_LA16_RAWMODES = {"LA;16B"}
# What PIL raises for a broken or unsupported file (anything else would be a bug here, so it propagates).
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


class _Unreadable(Exception):
    """Internal: why a file cannot be converted (read_image turns it into a ValueError naming the file)."""


def _note(notes: Optional[Set[Tuple[str, str]]], note: str, path: Path) -> None:
    if notes is not None:
        notes.add((note, str(path)))


def format_notes(notes: Iterable[Tuple[str, str]]) -> List[str]:
    """One line per kind of note, e.g. ``note: alpha channel dropped in 3 images`` (from ``read_image``'s set)."""
    counts = Counter(note for note, _path in notes)
    return [f"note: {note} in {n} image{'s' if n != 1 else ''}" for note, n in sorted(counts.items())]


def _round16(v: np.ndarray) -> np.ndarray:
    """uint16 values -> uint8, ``round(v * 255 / 65535)`` exactly (v / 257 is never a tie)."""
    return ((v.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _rgb(arr: np.ndarray) -> np.ndarray:
    """``[H, W]`` grey or ``[H, W, >=3]`` -> ``[H, W, 3]``."""
    return np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr[:, :, :3]


def _tile_rawmode(img: Image.Image) -> Optional[str]:
    """The rawmode of the (not yet loaded) image's tiles when they all share one, else None."""
    modes = set()
    for tile in img.tile:
        args = tile[3]  # the rawmode, or a tuple starting with it (TIFF)
        if isinstance(args, tuple) and args:
            args = args[0]
        modes.add(args if isinstance(args, str) else None)
    return modes.pop() if len(modes) == 1 else None


def _decode_with_rawmode(path: Path, rawmode: str) -> np.ndarray:
    """Decodes ``path`` again with every tile's rawmode replaced (see ``_LOW_BYTE_RAWMODES``)."""
    with Image.open(path) as img:
        tiles = []
        for tile in img.tile:
            args = rawmode if isinstance(tile[3], str) else (rawmode, *tile[3][1:])
            tiles.append(tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args))
        img.tile = tiles
        img.load()
        return np.asarray(img)


def _sixteen_bit_colour(path: Path, img: Image.Image, rawmode: str, notes) -> np.ndarray:
    """A 16-bit colour or grey+alpha file PIL opened as 8-bit: the full samples, rounded to 8 bits.

    PIL's own decode (the high bytes) comes first, so a broken file fails as any other; only a failing
    second decode falls back to the high bytes, with a note.
    """
    high = np.asarray(img)[:, :, :3]
    try:
        if rawmode in _LA16_RAWMODES:
            raw = _decode_with_rawmode(path, "RGBA")
            if raw.shape != (*high.shape[:2], 4):
                raise ValueError(f"unexpected shape {raw.shape}")
            return _rgb(_round16(raw[:, :, 0].astype(np.uint16) << 8 | raw[:, :, 1]))
        low = _decode_with_rawmode(path, _LOW_BYTE_RAWMODES[rawmode])
        if low.ndim != 3 or low.shape[:2] != high.shape[:2]:
            raise ValueError(f"unexpected shape {low.shape}")
        return _round16(high.astype(np.uint16) << 8 | low[:, :, :3])
    except _READ_ERRORS:
        _note(notes, NOTE_8BIT, path)
        return high


def _to_rgb8(path: Path, img: Image.Image, notes) -> np.ndarray:
    """The opened image as uint8 ``[H, W, 3]`` (the conventions in the module docstring)."""
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        _note(notes, NOTE_ALPHA, path)
        img.info.pop("transparency", None)  # dropped; also spares PIL's warning on palette transparency
    rawmode = _tile_rawmode(img) if img.mode in ("RGB", "RGBA") else None
    if rawmode in _LOW_BYTE_RAWMODES or rawmode in _LA16_RAWMODES:
        return _sixteen_bit_colour(path, img, rawmode, notes)
    if rawmode is not None and ";16" in rawmode:  # e.g. premultiplied RGBa;16: PIL's 8 bits as they are
        _note(notes, NOTE_8BIT, path)
    if img.mode.startswith("I;16"):
        return _rgb(_round16(np.asarray(img)))
    if img.mode == "I":
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            if arr.min() < 0:
                _note(notes, NOTE_NEGATIVE, path)
            if arr.max() > 65535:
                _note(notes, NOTE_INT32, path)
                return _rgb(np.rint(np.clip(arr, 0, None) * (255.0 / 2147483647)).astype(np.uint8))
        return _rgb(_round16(np.clip(arr, 0, 65535)))
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            _note(notes, NOTE_FLOAT_CLIPPED, path)
        return _rgb(np.rint(np.clip(arr, 0, 1) * 255).astype(np.uint8))
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ValueError as err:  # a mode PIL has no RGB conversion for
        raise _Unreadable(f"mode {img.mode}: {err}") from err


def read_image(path: Path, size: Optional[int] = None, notes: Optional[Set[Tuple[str, str]]] = None) -> torch.Tensor:
    """Decodes ``path`` to RGB uint8 ``[3, H, W]``, whatever its mode and bit depth (module docstring).

    size: resize to size x size (PIL bilinear), after the conversion to 8-bit RGB, so a resized image
        is exactly the resize of the unresized one. notes: a set collecting ``(note, str(path))`` for
        what the conversion lost (alpha dropped, values clipped, ...); see ``format_notes``.
    Anything PIL cannot read or convert raises ValueError naming the file and the reason.
    """
    try:
        with Image.open(path) as img:
            arr = _to_rgb8(path, img, notes)
            if size is not None:
                arr = np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((size, size), Image.BILINEAR))
    except (_Unreadable, *_READ_ERRORS) as err:
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
    return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1)


def _image_files(folder: Path, recursive: bool) -> Set[str]:
    """Image names in ``folder`` (recursive: files' paths relative to it, with ``/``; symlinked folders not entered)."""
    if not recursive:
        return {p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    found = set()
    for root, _dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found.update((rel / f).as_posix() for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return found


def list_images(folder: Path, recursive: bool = False) -> List[str]:
    """The image names in ``folder``, sorted (recursive: paths relative to it, with ``/``); an error if none."""
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder")
    names = sorted(_image_files(folder, recursive))
    if not names:
        raise ValueError(f"folder {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                         + (" in it or its subfolders" if recursive else ""))
    return names


def pair_paths(a: Path, b: Path, recursive: bool = False) -> List[Tuple[str, Path, Path]]:
    """Two files -> one pair; two folders -> pairs of image files with the same name.

    recursive: pair the image files of the two folder trees by their path relative to each folder
    (names like ``sub/x.png``). A name present in only one folder is an error that lists it (never
    paired by position).
    """
    if a.is_file() and b.is_file():
        return [(a.name if a.name == b.name else f"{a.name} | {b.name}", a, b)]
    if a.is_dir() and b.is_dir():
        names_a, names_b = _image_files(a, recursive), _image_files(b, recursive)
        only = sorted(names_a ^ names_b)
        if only:
            raise ValueError(
                f"folders {str(a)!r} and {str(b)!r} must hold the same image names; unmatched: {', '.join(only[:10])}"
                + (f" ... ({len(only) - 10} more)" if len(only) > 10 else "")
            )
        if not names_a:
            raise ValueError(f"folder {str(a)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                             + (" in it or its subfolders" if recursive else ""))
        return [(n, a / n, b / n) for n in sorted(names_a)]
    missing = [str(p) for p in (a, b) if not p.exists()]
    if missing:
        raise ValueError(f"no such file or folder: {', '.join(missing)}")
    raise ValueError("give two image files or two folders, not one of each")


_COLUMN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_ -]*")


def read_pair_list(path: Path) -> List[Tuple[str, Path, Path]]:
    """The pairs of a CSV or TSV list: rows ``a,b[,name]``, in file order.

    Delimiter: tab for a ``.tsv`` file; otherwise tab when the first row holds a tab, else comma (CSV
    quoting works for paths holding the delimiter). Fields are stripped of surrounding spaces; blank
    lines and lines starting with ``#`` are skipped. Paths are relative to the list's folder (absolute
    ones are kept). The first row is a header, and skipped, when neither its a nor b is an existing
    file and both look like column names (a letter, then letters, digits, ``_``, ``-`` or spaces: no
    ``.`` or ``/``), e.g. ``a,b,name`` or ``ref,dist``.

    Names: the row's name, else a's path as written in the list (relative to the list's folder when
    it is an absolute path inside it). Pairs that would share a name get `` | b`` appended (so a
    default name becomes ``a | b``), then, if still shared, `` (line N)``. Only the list's format is
    checked: missing image files are left to the reader. ValueError (naming the list and the line)
    for a row without two paths, with more than three fields, or with an empty path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read pair list {str(path)!r}: {err}") from err
    base = path.parent
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"pair list {str(path)!r} holds no pairs")
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in lines[0][1] else ","

    def where(lineno: int) -> str:
        return f"pair list {str(path)!r}, line {lineno}"

    def resolve(field: str) -> Path:
        p = Path(field)
        return p if p.is_absolute() else base / p

    def written(field: str) -> str:
        p = Path(field)
        if p.is_absolute():
            try:
                return p.relative_to(base.absolute()).as_posix()
            except ValueError:
                return field
        return p.as_posix()

    rows = []  # (line, a field, b field, name or None)
    for n, (lineno, line) in enumerate(lines):
        fields = [f.strip() for f in next(csv.reader([line], delimiter=delimiter))]
        while len(fields) > 2 and fields[-1] == "":
            fields.pop()
        if len(fields) < 2 or len(fields) > 3:
            raise ValueError(f"{where(lineno)}: expected 'a{delimiter}b' or 'a{delimiter}b{delimiter}name', got "
                             f"{len(fields)} field{'s' if len(fields) != 1 else ''}: {line.strip()!r}")
        fa, fb = fields[0], fields[1]
        if n == 0 and all(_COLUMN_NAME.fullmatch(f) and not resolve(f).is_file() for f in (fa, fb)):
            continue  # header
        if not fa or not fb:
            raise ValueError(f"{where(lineno)}: empty {'a' if not fa else 'b'} path: {line.strip()!r}")
        rows.append((lineno, fa, fb, fields[2] if len(fields) == 3 else None))
    if not rows:
        raise ValueError(f"pair list {str(path)!r} holds no pairs (only a header)")

    names = [name if name is not None else written(fa) for _, fa, _, name in rows]
    for rule in (lambda i: f"{names[i]} | {written(rows[i][2])}", lambda i: f"{names[i]} (line {rows[i][0]})"):
        seen = Counter(names)
        names = [rule(i) if seen[name] > 1 else name for i, name in enumerate(names)]
    first: dict = {}
    for i, name in enumerate(names):
        if name in first:
            raise ValueError(f"{where(rows[i][0])}: name {name!r} is also line {rows[first[name]][0]}'s; names must be unique")
        first[name] = i
    return [(name, resolve(fa), resolve(fb)) for name, (_, fa, fb, _) in zip(names, rows)]


__all__ = ["IMAGE_SUFFIXES", "format_notes", "pair_paths", "read_image", "read_pair_list"]
