"""LPIPS "lin" channel weights: one non-negative vector ``[C_l]`` per tap, from a local file.

The file format is the one the ``lpips`` package ships (``weights/v0.1/{alex,vgg,squeeze}.pth``):
keys ``lin{l}.model.1.weight`` (or ``.model.0.`` for lin layers trained without dropout), each
``[1, C_l, 1, 1]``. A safetensors file with the same keys works too.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import List, Sequence, Union

from torch import Tensor

from .trunks.checkpoint import CheckpointError, read_state_dict

_KEY = re.compile(r"^lin(\d+)\.model\.[01]\.weight$")


def lpips_package_lin_file(lpips_net: str, version: str = "0.1") -> Path:
    """The lin file shipped inside an installed ``lpips`` package (found without importing it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "lin='lpips' reads the weights shipped inside the `lpips` package, which is not installed; "
            "pip install lpips, or pass the path of a lin file as lin="
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / f"v{version}" / f"{lpips_net}.pth"
    if not path.is_file():
        raise ValueError(f"the installed lpips package has no {path}; pass the path of a lin file as lin=")
    return path


def load_lin(source: Union[str, os.PathLike], channels: Sequence[int], lpips_net: str | None = None) -> List[Tensor]:
    """Reads the lin weights for a trunk whose taps have ``channels`` channels.

    source: a file path, or ``"lpips"`` for the v0.1 file of the installed ``lpips`` package
    (needs ``lpips_net``: ``alex``, ``vgg`` or ``squeeze``).
    Returns L float32 tensors ``[C_l]``. Raises CheckpointError when keys, count or shapes do not
    fit the taps, and ValueError for negative weights.
    """
    if isinstance(source, str) and source == "lpips":
        if lpips_net is None:
            raise ValueError("lin='lpips' exists only for the LPIPS trunks (alexnet, vgg16, squeezenet1_1)")
        path = lpips_package_lin_file(lpips_net)
    else:
        path = Path(source)
    state = read_state_dict(path)
    where = f"lin file {str(path)!r}"
    by_layer = {}
    unexpected = []
    for key, value in state.items():
        match = _KEY.match(key)
        if match is None or int(match.group(1)) >= len(channels) or int(match.group(1)) in by_layer:
            unexpected.append(key)
        else:
            by_layer[int(match.group(1))] = value
    missing = [f"lin{i}.model.1.weight" for i in range(len(channels)) if i not in by_layer]
    misshaped = [
        f"lin{i}: file {tuple(by_layer[i].shape)} vs taps [1, {c}, 1, 1]"
        for i, c in enumerate(channels)
        if i in by_layer and tuple(by_layer[i].shape) != (1, c, 1, 1)
    ]
    if missing or unexpected or misshaped:
        raise CheckpointError(
            f"{where} does not fit a trunk with {len(channels)} taps of {list(channels)} channels "
            f"(is it for another net?): missing {missing}, unexpected {unexpected}, mis-shaped {misshaped}"
        )
    weights = [by_layer[i].float().reshape(-1) for i in range(len(channels))]
    negative = [i for i, w in enumerate(weights) if bool((w < 0).any())]
    if negative:
        raise ValueError(f"{where} has negative channel weights in layer(s) {negative}; LPIPS weights are non-negative")
    return weights
