"""``perceptual-fast pairwise DIR [DIR2]``: every distance between the images of one folder (or of two),
from one trunk pass per image (``Scorer.embed`` / ``ops/pairwise``).

Outputs, any of them: ``--npy PREFIX`` (``PREFIX.<distance>.npy`` [N, M] float64 and
``PREFIX.names.json``), ``--csv FILE`` (a row per pair: a, b, each distance; for one folder each
pair once), ``--diversity`` (one folder: the mean distance over its K (K - 1) / 2 pairs with a
jackknife standard error over images), ``--nearest K`` (for each image of DIR2, or of DIR alone,
its K nearest images of DIR). Without any, small matrices are printed. The matrix is computed in
tiles of ``--block`` images and written tile by tile: beyond the embeddings (one per image), memory
does not grow with N x M.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ..ops.pairwise import Embedding, check_comparable, concat, pairwise_tiles, place_tile
from ..util.atomic import write_text_atomically
from ..util.images import format_notes, list_images, read_image
from ..util.progress import Progress
from ..util.tables import format_table
from .options import add_scorer_options, build_scorer

PRINT_LIMIT = 16  # matrices up to this many rows and columns are printed when no output is asked for


def add_parser(sub) -> None:
    p = sub.add_parser("pairwise", help="every distance between the images of a folder, or of two folders: matrices, "
                                        "diversity, nearest neighbours")
    p.add_argument("dir", type=Path, help="a folder of images (rows of the matrix)")
    p.add_argument("dir2", type=Path, nargs="?", help="a second folder (columns); default: DIR against itself")
    p.add_argument("--recursive", action="store_true", help="take the images of subfolders too")
    add_scorer_options(p, "lpips", None)
    p.add_argument("--size", type=int, default=None, help="resize every image to SIZE x SIZE first (PIL bilinear)")
    p.add_argument("--npy", default=None, metavar="PREFIX", help="write PREFIX.<distance>.npy and PREFIX.names.json")
    p.add_argument("--csv", type=Path, default=None, help="write one row per pair (a, b, each distance)")
    p.add_argument("--diversity", action="store_true",
                   help="DIR alone: mean distance over its K(K-1)/2 pairs, with a jackknife standard error over images")
    p.add_argument("--nearest", type=int, default=None, metavar="K",
                   help="for each image of DIR2 (or of DIR alone) its K nearest images of DIR")
    p.add_argument("--rank-by", default=None, help="the distance --nearest ranks by (default: the first of --distance)")
    p.add_argument("--block", type=int, default=256, help="images per side of a tile of the matrix (default: 256)")
    p.add_argument("--workers", type=int, default=2, help="image decode threads (default: 2)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def embed_folder(scorer, folder: Path, names: List[str], args: argparse.Namespace, notes: set) -> Embedding:
    """The embeddings of ``folder``'s images, decoded by ``--workers`` threads, ``--batch-size`` at a time."""
    progress = Progress(len(names), f"embedding {folder}", "images", enabled=not args.quiet)
    parts = []
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for start in range(0, len(names), args.batch_size):
            chunk = names[start:start + args.batch_size]
            images = list(pool.map(lambda n: read_image(folder / n, args.size, notes), chunk))
            shapes = sorted({tuple(im.shape[1:]) for im in images} | ({parts[0][1]} if parts else set()))
            if len(shapes) > 1:
                raise ValueError(f"the images of {str(folder)!r} differ in size ({', '.join(f'{h}x{w}' for h, w in shapes[:4])}"
                                 f"{', ...' if len(shapes) > 4 else ''}): pass --size N to resize them all")
            parts.append((scorer.embed(torch.stack(images)), shapes[0]))
            progress.update(len(chunk))
    return concat([e for e, _ in parts])


class _Diversity:
    """Sums over the pairs i < j of one set: the total and each image's share (for the jackknife)."""

    def __init__(self, count: int, distances: List[str]):
        self.count = count
        self.total = {d: 0.0 for d in distances}
        self.per_image = {d: torch.zeros(count, dtype=torch.float64) for d in distances}

    def add(self, i: int, j: int, values: Dict[str, torch.Tensor]) -> None:
        n, m = next(iter(values.values())).shape
        keep = torch.arange(i, i + n)[:, None] < torch.arange(j, j + m)[None, :]  # pairs above the diagonal
        for d, v in values.items():
            v = torch.where(keep, v, torch.zeros_like(v))
            self.total[d] += float(v.sum())
            self.per_image[d][i:i + n] += v.sum(1)
            self.per_image[d][j:j + m] += v.sum(0)

    def result(self) -> Dict[str, Dict[str, float]]:
        k = self.count
        pairs = k * (k - 1) // 2
        out = {}
        for d, total in self.total.items():
            mean = total / pairs
            # leave-one-image-out means over the (k-1)(k-2)/2 pairs without image i
            loo = (total - self.per_image[d]) / ((k - 1) * (k - 2) / 2) if k > 2 else torch.full((k,), math.nan)
            se = math.sqrt((k - 1) / k * float(((loo - loo.mean()) ** 2).sum())) if k > 2 else math.nan
            out[d] = {"mean": mean, "se": se, "pairs": pairs, "images": k}
        return out


class _Nearest:
    """The K smallest distances of every column (a query) over the rows seen so far (inf: none yet)."""

    def __init__(self, queries: int, k: int):
        self.k = k
        self.values = torch.full((queries, k), math.inf, dtype=torch.float64)
        self.rows = torch.zeros((queries, k), dtype=torch.long)

    def add(self, i: int, j: int, values: torch.Tensor, exclude_self: bool) -> None:
        """values: ``[n, m]`` distances of rows i.. to queries j..."""
        n, m = values.shape
        cand = values.T.clone()  # [m queries, n rows]
        rows = torch.arange(i, i + n).expand(m, n)
        if exclude_self:
            cand[rows == torch.arange(j, j + m)[:, None]] = math.inf
        v = torch.cat([self.values[j:j + m], cand], dim=1)
        r = torch.cat([self.rows[j:j + m], rows], dim=1)
        best = torch.topk(v, self.k, dim=1, largest=False)
        self.values[j:j + m], self.rows[j:j + m] = best.values, r.gather(1, best.indices)


def run(args: argparse.Namespace) -> int:
    same = args.dir2 is None
    if args.diversity and not same:
        raise ValueError("--diversity is the mean over the pairs of one folder: give DIR alone")
    if args.nearest is not None and args.nearest < 1:
        raise ValueError("--nearest K needs K >= 1")
    if args.block < 1:
        raise ValueError(f"--block must be a positive number of images; got {args.block}")
    scorer = build_scorer(args)
    distances = list(scorer.distances)
    rank_by = args.rank_by or distances[0]
    if rank_by not in distances:
        raise ValueError(f"--rank-by {rank_by!r} is not one of the distances computed ({', '.join(distances)})")
    notes: set = set()
    rows_names = list_images(args.dir, args.recursive)
    if args.diversity and len(rows_names) < 2:
        raise ValueError(f"--diversity needs at least 2 images; {str(args.dir)!r} holds {len(rows_names)}")
    a = embed_folder(scorer, args.dir, rows_names, args, notes)
    cols_names = rows_names if same else list_images(args.dir2, args.recursive)
    b = a if same else embed_folder(scorer, args.dir2, cols_names, args, notes)
    n, m = len(rows_names), len(cols_names)
    printing = not (args.npy or args.csv or args.diversity or args.nearest)
    if printing and max(n, m) > PRINT_LIMIT:
        raise ValueError(f"{n} x {m} is too large to print: ask for --npy PREFIX, --csv FILE, --diversity or --nearest K")
    check_comparable(a, b)  # before any output file is opened

    matrices = _open_matrices(args.npy, distances, n, m) if (args.npy or printing) else None
    writer, csv_file = (None, None)
    if args.csv:
        csv_file = open(args.csv, "w", newline="")
        writer = csv.writer(csv_file)
        writer.writerow(["a", "b", *distances])
    diversity = _Diversity(n, distances) if args.diversity else None
    nearest = _Nearest(m, args.nearest) if args.nearest else None
    tiles = math.ceil(n / args.block) * math.ceil(m / args.block)
    progress = Progress(tiles if not same else math.ceil(n / args.block) * (math.ceil(n / args.block) + 1) // 2,
                        "pairwise", "tiles", enabled=not args.quiet)
    try:
        for i, j, tile in pairwise_tiles(a, b, args.block, upper=same):
            values = {d: v.sum(-1).cpu() for d, v in tile.items()}
            if matrices is not None:
                for d, v in values.items():
                    place_tile(matrices[d], i, j, v.numpy(), mirror=same)
            if writer is not None:
                _write_rows(writer, values, i, j, rows_names, cols_names, distances, same)
            if diversity is not None:
                diversity.add(i, j, values)
            if nearest is not None:
                nearest.add(i, j, values[rank_by], exclude_self=same)
                if same and i != j:
                    nearest.add(j, i, values[rank_by].T, exclude_self=True)
            progress.update(1)
    finally:
        if csv_file is not None:
            csv_file.close()
    results: Dict[str, object] = {"rows": n, "columns": m, "distances": distances}
    if args.npy:
        for d in distances:
            matrices[d].flush()
            os.replace(f"{args.npy}.{d}.npy.part", f"{args.npy}.{d}.npy")
        write_text_atomically(f"{args.npy}.names.json", json.dumps({"rows": rows_names, "columns": cols_names}) + "\n")
        results["npy"] = [f"{args.npy}.{d}.npy" for d in distances]
    if diversity is not None:
        results["diversity"] = diversity.result()
    if nearest is not None:
        results["nearest"] = {"rank_by": rank_by, "k": min(args.nearest, n - same), "queries": [
            {"query": cols_names[q], "matches": [{"image": rows_names[int(r)], rank_by: float(v)}
                                                 for r, v in zip(nearest.rows[q], nearest.values[q]) if math.isfinite(v)]}
            for q in range(m)]}
    if printing:
        results["matrices"] = {d: matrices[d].tolist() for d in distances}
    _report(results, args, rows_names, cols_names)
    for line in format_notes(notes):
        print(line, file=sys.stderr)
    return 0


def _open_matrices(prefix: Optional[str], distances: List[str], n: int, m: int) -> Dict[str, np.ndarray]:
    """``[n, m]`` float64 per distance: memory-mapped ``PREFIX.<d>.npy.part`` files (renamed when complete), or arrays."""
    if prefix is None:
        return {d: np.zeros((n, m)) for d in distances}
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    return {d: np.lib.format.open_memmap(f"{prefix}.{d}.npy.part", mode="w+", dtype=np.float64, shape=(n, m))
            for d in distances}


def _write_rows(writer, values: Dict[str, torch.Tensor], i: int, j: int, rows: List[str], cols: List[str],
                distances: List[str], same: bool) -> None:
    stacked = torch.stack([values[d] for d in distances], dim=-1)  # [n, m, D]
    for r in range(stacked.shape[0]):
        for c in range(stacked.shape[1]):
            if same and i + r >= j + c:  # one folder: each pair once (i < j)
                continue
            writer.writerow([rows[i + r], cols[j + c], *(f"{v:.10g}" for v in stacked[r, c].tolist())])


def _report(results: Dict[str, object], args: argparse.Namespace, rows: List[str], cols: List[str]) -> None:
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{results['rows']} x {results['columns']} images, trunk {args.trunk}, distances {', '.join(results['distances'])}")
    for d, matrix in results.get("matrices", {}).items():
        print(f"\n{d}:")
        print(format_table(["", *cols], [[name, *row] for name, row in zip(rows, matrix)]))
    if "diversity" in results:
        print("\ndiversity (mean over the pairs of the folder, jackknife standard error over images):")
        print(format_table(["distance", "mean", "se", "pairs"],
                           [[d, v["mean"], v["se"], v["pairs"]] for d, v in results["diversity"].items()]))
    if "nearest" in results:
        near = results["nearest"]
        print(f"\nnearest {near['k']} by {near['rank_by']}:")
        print(format_table(["query", "rank", "image", near["rank_by"]],
                           [[q["query"], rank + 1, match["image"], match[near["rank_by"]]]
                            for q in near["queries"] for rank, match in enumerate(q["matches"])]))
    if "npy" in results:
        print(f"\nwrote {', '.join(results['npy'])} and {args.npy}.names.json")
    if args.csv:
        print(f"wrote {args.csv}")
