"""The paper's figures from a sweep's results: PS against top-1 accuracy for each swept
hyperparameter (the inverse U), PS against training step for each run and, optionally, each
layer's PS against top-1 accuracy. Needs matplotlib
(``pip install 'perceptual_fast[plot]'``).

A run is the folder holding a checkpoint; a sweep axis is a hyperparameter (recorded by
``perceptual-fast train`` in each checkpoint) that takes more than one value across the runs.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

# Hyperparameters the paper sweeps, in the order panels are drawn; any other varying one follows.
AXES = ("trunk", "depth", "width", "steps", "epochs", "weight_decay", "label_smoothing", "dropout", "crop", "lr")
_NOT_AXES = {"checkpoint_every", "seed", "data"}


def _matplotlib():
    try:
        import matplotlib
    except ImportError as err:
        raise ValueError("perceptual-fast plot needs matplotlib: pip install 'perceptual_fast[plot]' "
                         "(or pip install matplotlib)") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_name(record: Dict[str, Any]) -> str:
    """The run a checkpoint belongs to: its folder's name."""
    return Path(record["checkpoint"]).parent.name


def _order(value: str):
    """Sort key of a JSON-encoded axis value: numbers by value, before anything else."""
    v = json.loads(value)
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, value)


def sweep_axes(records: Sequence[Dict[str, Any]]) -> List[str]:
    """Hyperparameters that take more than one value across ``records`` (the paper's order first)."""
    values: Dict[str, set] = defaultdict(set)
    for r in records:
        for k, v in (r.get("hyperparameters") or {}).items():
            values[k].add(json.dumps(v))
    varying = [k for k, v in values.items() if len(v) > 1 and k not in _NOT_AXES]
    return [k for k in AXES if k in varying] + sorted(k for k in varying if k not in AXES)


def plot_results(records: Sequence[Dict[str, Any]], out: os.PathLike, distance: Optional[str] = None,
                 per_layer: bool = False) -> Path:
    """Writes the figure to ``out`` (format from its suffix): one panel of PS vs top-1 per sweep axis
    (points coloured by the axis value, each run's checkpoints joined in step order; one plain panel
    when nothing varies) and one of PS vs training step per run. ``distance``: whose PS (default the
    first distance of the results). ``per_layer``: one more panel, PS of each layer's term alone vs
    top-1, one line per layer (checkpoints in accuracy order; those of older sweeps, without per-layer
    PS, left out). Checkpoints with errors, or without an accuracy, are left out of the panels they
    cannot be placed in."""
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise ValueError("no successfully scored checkpoint in the results: nothing to plot")
    distance = distance or next(iter(ok[0]["ps"]))
    if any(distance not in r["ps"] for r in ok):
        raise ValueError(f"distance {distance!r} is not in every result; the results hold {sorted(ok[0]['ps'])}")
    layered = [r for r in ok if ((r.get("ps_per_layer") or {}).get(distance)) and r.get("val_top1") is not None]
    if per_layer and not layered:
        raise ValueError(f"no result with an accuracy has per-layer PS of {distance!r} (results of a sweep before "
                         "per-layer PS was recorded? rerun the sweep into a new folder)")
    plt = _matplotlib()
    axes = sweep_axes(ok) or [None]
    n_panels = len(axes) + 1 + bool(per_layer)
    fig, panels = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.8), squeeze=False)
    runs: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for r in ok:
        runs[run_name(r)].append(r)
    for run in runs.values():
        run.sort(key=lambda r: (r.get("step") is None, r.get("step") or 0))
    synthetic = any((r.get("hyperparameters") or {}).get("data") == "synthetic" for r in ok)
    ps_label = f"PS ({distance}{', SYNTHETIC BAPPS' if any((r.get('settings') or {}).get('synthetic') for r in ok) else ''})"
    for ax, axis in zip(panels[0], axes):
        values = sorted({json.dumps((r.get("hyperparameters") or {}).get(axis)) for r in ok}, key=_order) if axis else ["all"]
        colours = {v: plt.cm.viridis(i / max(1, len(values) - 1)) for i, v in enumerate(values)}
        for run in runs.values():
            pts = [r for r in run if r.get("val_top1") is not None]
            if not pts:
                continue
            value = json.dumps((pts[0].get("hyperparameters") or {}).get(axis)) if axis else "all"
            ax.plot([100 * r["val_top1"] for r in pts], [r["ps"][distance] for r in pts], "-o", ms=3, lw=0.8,
                    color=colours[value], label=value)
        handles = {h.get_label(): h for h in ax.get_lines()}
        if axis:
            ax.legend(handles.values(), handles.keys(), title=axis, fontsize=7, title_fontsize=8)
        ax.set_xlabel("top-1 accuracy %" + (" (SYNTHETIC classes)" if synthetic else ""))
        ax.set_ylabel(ps_label)
        ax.set_title(f"PS vs accuracy by {axis}" if axis else "PS vs accuracy", fontsize=9)
    steps_ax = panels[0][len(axes)]
    for name, run in runs.items():
        pts = [r for r in run if r.get("step") is not None]
        if pts:
            steps_ax.plot([r["step"] for r in pts], [r["ps"][distance] for r in pts], "-o", ms=3, lw=0.8, label=name)
    if len(runs) <= 12:
        steps_ax.legend(fontsize=7)
    steps_ax.set_xlabel("training step")
    steps_ax.set_ylabel(ps_label)
    steps_ax.set_title("PS vs training step", fontsize=9)
    if per_layer:
        layer_ax = panels[0][-1]
        layered.sort(key=lambda r: r["val_top1"])
        n_layers = max(len(r["ps_per_layer"][distance]) for r in layered)
        for i in range(n_layers):
            pts = [r for r in layered if i < len(r["ps_per_layer"][distance])]
            layer_ax.plot([100 * r["val_top1"] for r in pts], [r["ps_per_layer"][distance][i] for r in pts], "-o", ms=3,
                          lw=0.8, color=plt.cm.plasma(i / max(1, n_layers - 1)), label=f"layer {i}")
        layer_ax.legend(fontsize=7)
        layer_ax.set_xlabel("top-1 accuracy %" + (" (SYNTHETIC classes)" if synthetic else ""))
        layer_ax.set_ylabel(ps_label.replace("PS (", "PS of one layer (", 1))
        layer_ax.set_title("per-layer PS vs accuracy", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
