"""SYNTHETIC data in exactly the published BAPPS layout (``make_bapps``), and the pieces it is made of:
procedural reference images, distortions of several kinds and strengths, and judgements from a
stated rule. Always labelled synthetic.

256x256 PNGs and ``.npy`` judgements (float32, shape ``[1]``), one category per distortion kind
(``KINDS``), each item drawn with a random strength in [0, 1].

- 2afc: ``ref`` is a reference image, ``p0``/``p1`` two distortions of it of the category's kind;
  ``judge``, the share of people preferring p1, follows :func:`judge_rule`:
  ``h = sigmoid(JUDGE_SLOPE * (s0 - s1))``, rounded to fifths (five judges per triplet), where
  ``s0``, ``s1`` in [0, 1] are the distortion strengths of p0 and p1: people prefer the patch that
  is distorted less, more clearly so when the strengths differ more. One item in ``TIE_EVERY`` has
  ``p1`` identical to ``p0`` (a tie for every distance).
- jnd: ``p0`` is a reference image, ``p1`` a distortion of it with strength s in [0, 1/2];
  ``same = round(sigmoid(JND_SLOPE (JND_THRESHOLD - s)) * JUDGES) / JUDGES``: people call the
  two the same when the distortion is weak. One pair in ``TIE_EVERY`` is two identical images.

Reference images are generated (default) or random crops of scikit-image's bundled photos.
The root holds ``SYNTHETIC.txt`` stating all this; the reader and every report carry the label.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..util.progress import Progress
from .reader import SYNTHETIC_MARKER, TASKS

KINDS = ("noise", "blur", "color", "contrast", "blocks")
JUDGE_SLOPE = 6.0
JUDGES = 5
SIZE = 256
TIE_EVERY = 8
JND_SLOPE = 20.0
JND_THRESHOLD = 0.2
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel")
SOURCES = ("generated", "photos")

RULE = (
    "SYNTHETIC BAPPS-layout data made by perceptual-fast make-bapps; not human judgements.\n"
    f"Categories are distortion kinds ({', '.join(KINDS)}), each item with a random strength s in [0, 1].\n"
    f"2afc: judge (share preferring p1) = round(sigmoid({JUDGE_SLOPE:g} (s0 - s1)) * {JUDGES}) / {JUDGES}; "
    f"1 item in {TIE_EVERY} has p1 identical to p0.\n"
    f"jnd: p0 is the reference, p1 a distortion with s in [0, 1/2]; same = round(sigmoid({JND_SLOPE:g} "
    f"({JND_THRESHOLD:g} - s)) * {JUDGES}) / {JUDGES}; 1 pair in {TIE_EVERY} is two identical images."
)


def reference_images(n: int, size: int, generator: torch.Generator) -> Tensor:
    """``[n, 3, size, size]`` float in [-1, 1]: smooth colour gradients, gratings and shapes."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        r = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
        base = (r(3, 1, 1) * 2 - 1) * 0.6 + (r(3, 1, 1) - 0.5) * xx + (r(3, 1, 1) - 0.5) * yy
        freq, angle = 2 + 10 * r(1), math.pi * float(r(1))
        grating = torch.sin(freq * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) + 6.3 * r(1))
        img = base + 0.35 * (r(3, 1, 1) * 2 - 1) * grating
        for _ in range(3):  # a few discs and boxes of flat colour
            cx, cy, rad = r(1) * 2 - 1, r(1) * 2 - 1, 0.15 + 0.35 * r(1)
            mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < rad**2) if r(1) < 0.5 else ((xx - cx).abs() < rad) & ((yy - cy).abs() < rad)
            img = torch.where(mask, r(3, 1, 1) * 2 - 1, img)
        out[i] = img.clamp(-1, 1)
    return out


def distort(x: Tensor, kind: str, strength: float, generator: torch.Generator) -> Tensor:
    """A distorted copy of one image ``x`` ``[3, H, W]`` in [-1, 1]; ``strength`` in [0, 1]."""
    if kind == "noise":
        y = x + 0.5 * strength * torch.randn(x.shape, generator=generator)
    elif kind == "blur":
        k = 1 + 2 * int(round(1 + 4 * strength))
        y = torch.nn.functional.avg_pool2d(x[None], k, stride=1, padding=k // 2, count_include_pad=False)[0]
    elif kind == "color":
        y = x + strength * 0.8 * (torch.rand(3, 1, 1, generator=generator) * 2 - 1)
    elif kind == "contrast":
        y = x * (1 - 0.8 * strength)
    elif kind == "blocks":
        f = 1 + int(round(7 * strength))
        small = torch.nn.functional.avg_pool2d(x[None], f, ceil_mode=True)
        y = torch.nn.functional.interpolate(small, size=x.shape[1:], mode="nearest")[0]
    else:
        raise ValueError(f"unknown distortion {kind!r}; choose from {', '.join(KINDS)}")
    return y.clamp(-1, 1)


def judge_rule(s0: Tensor, s1: Tensor) -> Tensor:
    """The stated rule: share of JUDGES people preferring p1, ``round(sigmoid(JUDGE_SLOPE (s0 - s1)) JUDGES) / JUDGES``.

    s0, s1: ``[n]`` distortion strengths in [0, 1] of p0 and p1. Returns ``[n]`` float32 in {0, 1/5, ..., 1}.
    """
    return torch.round(torch.sigmoid(JUDGE_SLOPE * (s0 - s1)) * JUDGES) / JUDGES


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] (any shape) -> uint8 0..255, rounded."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def photo_references(n: int, size: int, generator: torch.Generator) -> Tensor:
    """``[n, 3, size, size]`` in [-1, 1]: random crops of scikit-image's bundled colour photos."""
    try:
        from skimage import data
    except ImportError as err:
        raise ValueError("--source photos needs scikit-image (pip install 'perceptual_fast[baselines]'); "
                         "or use --source generated") from err
    photos = []
    for name in PHOTOS:
        img = getattr(data, name)()[..., :3]
        photos.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 127.5 - 1)
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        img = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        h, w = img.shape[1:]
        scale = max(size / h, size / w, 0.5 + 0.5 * float(torch.rand(1, generator=generator)))
        if scale != 1.0:
            img = torch.nn.functional.interpolate(img[None], scale_factor=scale, mode="bilinear", antialias=True,
                                                  align_corners=False)[0]
        top = int(torch.randint(img.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(img.shape[2] - size + 1, (1,), generator=generator))
        out[i] = img[:, top : top + size, left : left + size]
    return out.clamp(-1, 1)


def _references(n: int, source: str, g: torch.Generator) -> Tensor:
    if source == "generated":
        return reference_images(n, SIZE, g)
    if source == "photos":
        return photo_references(n, SIZE, g)
    raise ValueError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")


def category_items(task: str, kind: str, n: int, source: str, g: torch.Generator) -> Dict[str, Tensor]:
    """n SYNTHETIC items of one category: uint8 ``[n, 3, 256, 256]`` per image folder of ``task``
    and the judgement ``[n]`` float32 (``judge`` or ``same``, the rules in the module docstring)."""
    ref = _references(n, source, g)
    tie = torch.arange(n) % TIE_EVERY == TIE_EVERY - 1
    if task == "2afc":
        s0, s1 = torch.rand(n, generator=g), torch.rand(n, generator=g)
        s1 = torch.where(tie, s0, s1)
        p0 = torch.stack([distort(ref[i], kind, float(s0[i]), g) for i in range(n)])
        p1 = torch.stack([p0[i] if tie[i] else distort(ref[i], kind, float(s1[i]), g) for i in range(n)])
        return {"ref": to_uint8(ref), "p0": to_uint8(p0), "p1": to_uint8(p1), "judge": judge_rule(s0, s1)}
    s = torch.where(tie, 0.0, 0.5 * torch.rand(n, generator=g))
    p1 = torch.stack([ref[i] if tie[i] else distort(ref[i], kind, float(s[i]), g) for i in range(n)])
    same = torch.round(torch.sigmoid(JND_SLOPE * (JND_THRESHOLD - s)) * JUDGES) / JUDGES
    return {"p0": to_uint8(ref), "p1": to_uint8(p1), "same": same}


def make_bapps(out_dir: os.PathLike, triplets: int = 40, jnd: int = 40, train: int = 0, categories: Sequence[str] = KINDS,
               source: str = "generated", seed: int = 0, progress: bool = True) -> Path:
    """Writes a SYNTHETIC BAPPS folder: ``triplets`` per category in 2afc/val, ``train`` in 2afc/train
    (none by default), ``jnd`` pairs per category in jnd/val. Deterministic in ``seed``. Returns the root."""
    root = Path(out_dir)
    bad = [c for c in categories if c not in KINDS]
    if bad or not categories:
        raise ValueError(f"unknown categories {bad}; choose from {', '.join(KINDS)}")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{str(root)!r} exists and is not empty; give a new folder")
    plan = [(t, s, n) for t, s, n in (("2afc", "val", triplets), ("2afc", "train", train), ("jnd", "val", jnd)) if n > 0]
    if not plan:
        raise ValueError("nothing to write: give a positive number of triplets, train triplets or jnd pairs")
    bar = Progress(sum(n for _, _, n in plan) * len(categories), f"writing {root}", "items", enabled=progress)
    root.mkdir(parents=True, exist_ok=True)
    (root / SYNTHETIC_MARKER).write_text(RULE + "\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-image ops are tiny: more threads only add synchronisation (50x slower here)
    try:
        _write_items(root, plan, categories, source, seed, bar)
    finally:
        torch.set_num_threads(threads)
    return root


def _write_items(root: Path, plan, categories: Sequence[str], source: str, seed: int, bar: Progress) -> None:
    for p, (task, split, n) in enumerate(plan):
        for c, kind in enumerate(categories):
            g = torch.Generator().manual_seed(seed * 1000003 + 1009 * p + KINDS.index(kind))
            items = category_items(task, kind, n, source, g)
            image_dirs, target_dir = TASKS[task]
            folder = root / task / split / kind
            for d in (*image_dirs, target_dir):
                (folder / d).mkdir(parents=True)
            digits = max(6, int(math.log10(max(n - 1, 1))) + 1)
            for i in range(n):
                stem = f"{i:0{digits}d}"
                for d in image_dirs:
                    Image.fromarray(items[d][i].permute(1, 2, 0).numpy()).save(folder / d / f"{stem}.png", compress_level=1)
                np.save(folder / target_dir / f"{stem}.npy", items[target_dir][i : i + 1].numpy().astype(np.float32))
                bar.update(1)
