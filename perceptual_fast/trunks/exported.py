"""Trunks as ``torch.export`` programs (``.pt2``): written by ``perceptual-fast export``, scored without the Python classes.

``export_trunk`` traces a trunk's ``forward_taps`` into one program for every batch size and image
size (dynamic batch, height and width from the trunk's minimum side up) and saves it with what the
Scorer needs beside the graph, as the archive's extra files:

* ``perceptual_fast.trunk``: the trunk config JSON (as in ``save_trunk``'s metadata);
* ``perceptual_fast.taps``: ``{"tap_channels": [...], "min_side": int, "input_multiple": int}``.

``load_exported`` returns an ``ExportedTrunk``: an ``nn.Module`` with ``forward_taps``,
``tap_channels``, ``min_input_size()`` and ``trunk_config``, which moves with ``.to(device, dtype,
memory_format)`` like any module (the traced graph names no device or dtype of its own; the export
checks this). The program holds the taps only: no classifier.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import torch
from torch import Tensor, nn

from .checkpoint import CONFIG_KEY, TAPS_KEY, CheckpointError, read_exported


class _TapsForward(nn.Module):
    """``forward = trunk.forward_taps``: torch.export traces ``forward``."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk  # state dict keys: the trunk's own under checkpoint.EXPORTED_PREFIX

    def forward(self, x: Tensor) -> List[Tensor]:
        return list(self.trunk.forward_taps(x))


def export_trunk(trunk: nn.Module, path: str | os.PathLike) -> torch.export.ExportedProgram:
    """Traces ``trunk.forward_taps`` (a ``load_trunk`` trunk, float32 on the CPU) and writes it to ``path``.

    The batch, height and width are dynamic (height and width from ``trunk.min_input_size()``,
    multiples of ``input_multiple``); a trunk whose code fixes one of them is an error naming it.
    Returns the program.
    """
    config = getattr(trunk, "trunk_config", "")
    if not config:
        raise ValueError("export_trunk needs a trunk built by load_trunk (it records the trunk config the archive carries)")
    multiple = int(getattr(trunk, "input_multiple", 1))
    side = max(int(trunk.min_input_size()), 64)
    side = -(-side // multiple) * multiple
    example = torch.randn(2, 3, side, side + multiple)  # unequal sides: nothing may tie height to width
    dynamic = {"x": {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}
    module = _TapsForward(trunk.eval())
    # Size-oblivious: sizes 0 and 1 are not special-cased, so batch 1 and taps one position wide
    # run the same program (by default export assumes every dynamic size it traces is at least 2).
    with torch.no_grad(), torch.fx.experimental._config.patch(backed_size_oblivious=True):
        try:
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic)
        except Exception as err:  # torch.export raises several types; all mean "this code cannot be traced"
            raise ValueError(
                f"torch.export cannot trace trunk {json.loads(config)['name']!r} for every batch and image size: "
                f"{type(err).__name__}: {str(err).splitlines()[0]}"
            ) from err
    # `.float()` / `.to(dtype)` calls trace to run-time asserts that their input is float32 on the
    # CPU, as at export; they would refuse the float64 or CUDA trunk this module becomes after .to().
    for node in list(program.graph.nodes):
        if node.target is torch.ops.aten._assert_tensor_metadata.default:
            program.graph.erase_node(node)
    program.graph_module.recompile()
    devices = sorted({str(v) for n in program.graph.nodes for k, v in n.kwargs.items() if k == "device"})
    if devices:  # a device baked into the graph would not follow .to(device)
        raise ValueError(f"the traced trunk names devices {devices} in its graph; it could not move devices")
    taps = {"tap_channels": list(trunk.tap_channels), "min_side": int(trunk.min_input_size()), "input_multiple": multiple}
    torch.export.save(program, str(path), extra_files={CONFIG_KEY: config, TAPS_KEY: json.dumps(taps)})
    return program


class ExportedTrunk(nn.Module):
    """A trunk read from a ``.pt2`` archive: ``forward_taps`` runs the traced program.

    program: the program as a module (``ExportedProgram.module()``); tap_channels, min_side,
    input_multiple, trunk_config: from the archive's extra files. Taps only (``has_head`` is False).
    """

    has_head = False

    def __init__(self, program: nn.Module, tap_channels: List[int], min_side: int, input_multiple: int, trunk_config: str):
        super().__init__()
        self.program = program
        self.tap_channels = list(tap_channels)
        self.min_side = int(min_side)
        self.input_multiple = int(input_multiple)
        self.trunk_config = trunk_config

    def forward_taps(self, x: Tensor) -> List[Tensor]:
        """x: ``[N, 3, H, W]`` preprocessed images -> the L tap feature maps."""
        h, w, p = x.shape[-2], x.shape[-1], self.input_multiple
        if min(h, w) < self.min_side:  # clearer than the program's own guard failure
            raise ValueError(f"this trunk's input {h}x{w} is smaller than its minimum side {self.min_side}: resize the images")
        if h % p or w % p:
            raise ValueError(f"this trunk's input {h}x{w} is not a multiple of {p}: resize or crop the images")
        return list(self.program(x))

    def forward(self, x: Tensor) -> List[Tensor]:
        return self.forward_taps(x)

    def min_input_size(self) -> int:
        """The smallest square side for which every tap has at least one position."""
        return self.min_side

    def train(self, mode: bool = True) -> "ExportedTrunk":
        # The program was traced in eval mode and cannot change (exported modules refuse train()/eval());
        # training mode would mean nothing to it, so only the flag is kept.
        self.training = mode
        return self


def load_exported(path: str | os.PathLike) -> ExportedTrunk:
    """Reads a ``.pt2`` trunk archive that ``export_trunk`` wrote (CheckpointError naming what is wrong)."""
    program, extra = read_exported(path)
    if not extra[TAPS_KEY] or not extra[CONFIG_KEY]:
        raise CheckpointError(
            f"torch.export archive {str(path)!r} carries no {TAPS_KEY!r}/{CONFIG_KEY!r} extra files: it is not a trunk "
            "(write one with `perceptual-fast export ... -o trunk.pt2`)"
        )
    try:
        taps: Dict[str, Any] = json.loads(extra[TAPS_KEY])
        return ExportedTrunk(program.module(), taps["tap_channels"], taps["min_side"], taps["input_multiple"],
                             extra[CONFIG_KEY])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"torch.export archive {str(path)!r}: its {TAPS_KEY!r} extra file is malformed ({err})") from err
