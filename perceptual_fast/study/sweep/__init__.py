"""Scoring many checkpoints on BAPPS 2AFC: one results table, resumable, across processes.

    records = run_sweep(["runs/*/step*.safetensors"], "bapps.safetensors", ("spatial", "meanpool", "style"), "sweep/")

* The BAPPS 2afc/val (and jnd/val) images are read once (pack memory map or folder) and copied to the device
  once, as uint8; every checkpoint is scored on those same tensors.
* A background thread reads and builds the next checkpoint's trunk while the current one is scored.
* Each checkpoint's result is written atomically to ``OUT/done/<key>.json`` when it is done; a rerun
  skips checkpoints whose file (size, mtime) and settings (data, distances, precision) are unchanged,
  so a kill loses at most the checkpoint in flight. A checkpoint that cannot be loaded or scored is
  recorded with ``status: error`` and its message (retried on a rerun); the sweep goes on.
* Under ``torchrun`` (torch.distributed: gloo on CPU, NCCL on GPUs) rank r scores checkpoints
  r, r + W, r + 2W, ... of the sorted list; rank 0 gathers every record and writes the table.
* Per-layer PS (each layer's term alone as the distance) comes from the same trunk pass as PS; where the
  data has a jnd/val part its pairs are scored too, for JND mAP (x100, mean over categories) per distance.
* The table: ``OUT/results.jsonl`` (one record per checkpoint) and ``OUT/results.csv`` (one row per
  checkpoint: trunk, step, epoch, val_top1, PS, ``ps_<d>_l<i>``, ``jnd_map_<d>`` and per-category 2AFC
  for every distance, config). Records of an older sweep are reused; their new columns are empty.

Modules: ``discovery`` (finding and reading checkpoints), ``runner`` (scoring them: the loop, resume,
torchrun sharding) and ``results`` (the JSONL/CSV files and the table). What callers use is here.
"""

from .discovery import CHECKPOINT_SUFFIXES, checkpoint_info, expand_checkpoints
from .results import RESULTS_CSV, RESULTS_JSONL, csv_text, format_results, read_results, write_results
from .runner import DONE_DIR, device_bapps, run_sweep

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "DONE_DIR",
    "RESULTS_CSV",
    "RESULTS_JSONL",
    "checkpoint_info",
    "csv_text",
    "device_bapps",
    "expand_checkpoints",
    "format_results",
    "read_results",
    "run_sweep",
    "write_results",
]
