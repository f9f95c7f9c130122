"""``perceptual-fast score``: distances between two images, two folders paired by name, the pairs
of a CSV/TSV list, or the pairs of a BAPPS folder or pack (``score_sources``), streamed: decode
workers feed the trunk in batches of one image size, results go to ``--csv`` / ``--jsonl`` as they
come (flushed per batch), unreadable pairs become error rows, and ``--resume`` skips the pairs
already written. Without an output file the table (or ``--json``) is
printed at the end.

Exit status: 0 when every pair scored, 3 when some failed (listed at the end), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

from ..bapps.reader import parse_splits
from ..util.distributed import barrier, rank_and_world
from ..util.images import format_notes, pair_paths, read_pair_list
from ..util.pipeline import DecodeStats
from ..util.progress import Progress
from ..util.rows import RowWriter, merge_parts, names_in, part_path
from ..util.tables import format_table
from .options import add_scorer_options, build_scorer, weights_label
from .score_sources import BappsPairs, FilePairs, is_bapps


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="distances between two images, two folders paired by name, a list of pairs, "
                                     "or the pairs of a BAPPS folder or pack")
    p.add_argument("a", nargs="?", help="image file or folder; alone: a BAPPS folder or pack")
    p.add_argument("b", nargs="?", help="image file or folder (same names as in a)")
    p.add_argument("--recursive", action="store_true", help="pair folders by relative path, into subfolders")
    p.add_argument("--pairs", type=Path, default=None,
                   help="a CSV/TSV pair list instead of a and b: rows a,b[,name], paths relative to the list")
    add_scorer_options(p, "spatial", None)
    p.add_argument("--size", type=int, default=None,
                   help="resize every image to SIZE x SIZE first (PIL bilinear; a BAPPS folder: default 64)")
    p.add_argument("--split", default="val", help="a BAPPS folder or pack: val, train or all, comma-separated (default: val)")
    p.add_argument("--per-layer", action="store_true", help="report every layer's term")
    p.add_argument("--csv", type=Path, default=None, help="write one row per pair to this CSV file as pairs are scored")
    p.add_argument("--jsonl", type=Path, default=None, help="write one JSON object per pair to this file as pairs are scored")
    p.add_argument("--resume", action="store_true", help="skip the pairs already in --csv/--jsonl and append the rest")
    p.add_argument("--workers", type=int, default=2, help="image decode threads (default: 2)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--progress", action="store_true", help="a progress line even when stderr is not a terminal")
    p.set_defaults(func=run)


def _source(args: argparse.Namespace, stats: DecodeStats):
    """What to score (``score_sources``): file pairs, or the pairs of a BAPPS folder or pack."""
    if args.pairs is not None:
        if args.a is not None or args.b is not None:
            raise ValueError("give two images or folders, or --pairs LIST, not both")
        return FilePairs(read_pair_list(args.pairs), args.batch_size, args.size, args.workers, stats)
    if args.a is not None and args.b is None and is_bapps(Path(args.a)):
        return BappsPairs.load(Path(args.a), args.batch_size, args.size, parse_splits(args.split.split(",")), args.workers)
    if args.a is None or args.b is None:
        raise ValueError("give two image files, two folders, --pairs LIST, or one BAPPS folder or pack "
                         "(a folder holding 2afc/ or jnd/, or a .safetensors file from `perceptual-fast pack`)")
    return FilePairs(pair_paths(Path(args.a), Path(args.b), recursive=args.recursive), args.batch_size, args.size,
                     args.workers, stats)


def run(args: argparse.Namespace) -> int:
    if args.resume and not (args.csv or args.jsonl):
        raise ValueError("--resume needs --csv or --jsonl (the file to resume)")
    stats = DecodeStats()
    source = _source(args, stats)
    if args.device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per rank
        args.device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    scorer = build_scorer(args)
    rank, world = rank_and_world(scorer.device)
    if world > 1 and not (args.csv or args.jsonl):
        raise ValueError("under torchrun, score writes its rows to --csv or --jsonl")
    outputs = [(path, jsonl) for path, jsonl in ((args.csv, False), (args.jsonl, True)) if path is not None]
    # Under torchrun each rank scores every world-th pair into a part file of its own; rank 0 merges.
    target = {path: part_path(path, rank) if world > 1 else path for path, _ in outputs}
    done = set()
    if args.resume:
        for path, jsonl in outputs:
            done |= names_in(target[path], jsonl)
            if world > 1:
                done |= names_in(path, jsonl, repair=False)
    share = source.share(rank, world)
    todo = [name for name in share if name not in done]
    to_files = bool(outputs)
    layers = len(scorer.trunk.tap_channels) if args.per_layer else None
    writer = (RowWriter(target.get(args.csv), target.get(args.jsonl), scorer.distances, layers, args.resume)
              if to_files else None)
    results: Dict[str, Dict[str, object]] = {}  # only for the table of a run without output files
    failures: List[str] = []
    show = not args.quiet and (args.progress or sys.stderr.isatty())
    progress = Progress(len(todo), "score" if world == 1 else f"score rank {rank}/{world}", "pairs", enabled=show)
    start, scored = time.perf_counter(), 0
    try:
        for rows in source.rows(scorer, args.per_layer, done, rank, world):
            if writer is not None:
                writer.write(rows)
            else:
                results.update((r["name"], r) for r in rows)
            failures += [f"{r['name']}: {r['error']}" for r in rows if r["error"]]
            scored += sum(1 for r in rows if not r["error"])
            progress.update(len(rows))
    finally:
        if writer is not None:
            writer.close()
    if world > 1:
        barrier()
        if rank == 0:
            for path, jsonl in outputs:
                merge_parts(path, [part_path(path, r) for r in range(world)], source.names, jsonl, args.resume,
                            writer.columns)
    seconds = time.perf_counter() - start
    if not to_files:
        _print_results(args, scorer, source.names, results)
    for line in format_notes(stats.notes):
        print(line, file=sys.stderr)
    skipped = f", {len(done & set(share))} already done" if args.resume else ""
    print(f"score: {scored} pairs scored, {len(failures)} failed{skipped} in {seconds:.2f} s "
          f"({scored / max(seconds, 1e-9):.1f} pairs/s)", file=sys.stderr)
    if failures:
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        print("failed pairs:\n  " + "\n  ".join(failures[:10]) + more,
              file=sys.stderr)
        return 3
    return 0


def _print_results(args: argparse.Namespace, scorer, ordered: List[str], results: Dict[str, Dict[str, object]]) -> None:
    """The table (or --json) of a small run, in input order (``ordered`` names); failed pairs show their error."""
    if args.json:
        doc = {"trunk": args.trunk, "weights": weights_label(args), "lin": args.lin, "distances": list(scorer.distances),
               "pairs": [{"name": n, **{k: v for k, v in results[n].items() if k not in ("a", "b") and (k != "error" or v)}}
                         for n in ordered]}
        print(json.dumps(doc, indent=2))
        return
    print(f"trunk {args.trunk}, weights {weights_label(args)}" + (f", lin {args.lin}" if args.lin else ""))
    if args.weights == "random":
        print("note: a randomly initialised trunk gives reproducible distances, not calibrated perceptual ones")
    good = [n for n in ordered if not results[n]["error"]]
    if args.per_layer and good:
        layers = len(results[good[0]][scorer.distances[0]])
        headers = ["pair"] + [f"{d}[{layer}]" for d in scorer.distances for layer in range(layers)]
        rows = [[n] + [v for d in scorer.distances for v in results[n][d]] for n in good]
    else:
        headers = ["pair", *scorer.distances]
        rows = [[n] + [results[n][d] for d in scorer.distances] for n in good]
    if rows:
        print(format_table(headers, rows))
