"""Learned channel weights of the weighted distances, from local files: LPIPS's "lin" vectors and
DISTS's alpha/beta.

LPIPS: one non-negative vector ``[C_l]`` per tap, in the format the ``lpips`` package ships
(``weights/v0.1/{alex,vgg,squeeze}.pth``): keys ``lin{l}.model.1.weight`` (or ``.model.0.`` for lin
layers trained without dropout), each ``[1, C_l, 1, 1]``. A safetensors file with the same keys works too.

DISTS: the ``DISTS_pytorch`` package's ``weights.pt``: keys ``alpha`` and ``beta``, each
``[1, sum C_l, 1, 1]`` over the taps of ``dists_vgg16`` (the image and five VGG stages), split here
into one ``[2, C_l]`` tensor per tap and divided by their total, as the package does.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
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


def dists_package_weights_file() -> Path:
    """The alpha/beta file shipped inside an installed ``DISTS_pytorch`` package (found without
    importing it: its module imports torchvision)."""
    spec = importlib.util.find_spec("DISTS_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "lin='dists' reads the alpha/beta weights shipped inside the `DISTS_pytorch` package, which is not "
            "installed; pip install DISTS_pytorch, or pass the path of its weights.pt as lin="
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights.pt"
    if not path.is_file():
        raise ValueError(f"the installed DISTS_pytorch package has no {path}; pass the path of a DISTS weights.pt as lin=")
    return path


def is_dists_weights(state: dict) -> bool:
    """Whether a state dict is a DISTS alpha/beta file (keys ``alpha`` and ``beta``)."""
    return set(state) == {"alpha", "beta"}


def load_dists_weights(source: Union[str, os.PathLike], channels: Sequence[int]) -> List[Tensor]:
    """DISTS's weights for a trunk whose taps have ``channels`` channels: L float64 tensors ``[2, C_l]``
    (alpha; beta), divided by the total of both so the score is ``1 - sum alpha S1 + beta S2``.

    source: ``"dists"`` (the installed ``DISTS_pytorch`` package's file) or a file path. Raises
    CheckpointError when the keys or sizes do not fit the taps.
    """
    path = dists_package_weights_file() if isinstance(source, str) and source == "dists" else Path(source)
    state, where = read_state_dict(path), f"DISTS weights file {str(path)!r}"
    total = sum(channels)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if not is_dists_weights(state) or any(v.numel() != total for v in state.values()):
        raise CheckpointError(
            f"{where} does not fit a trunk with taps of {list(channels)} channels: it needs keys alpha and beta "
            f"of {total} elements each, one per tap channel; got {shapes} (DISTS_pytorch's file fits trunk dists_vgg16)"
        )
    alpha, beta = (state[k].reshape(-1).to(torch.float64) for k in ("alpha", "beta"))
    scale = alpha.sum() + beta.sum()
    if not bool(torch.isfinite(scale)) or float(scale) == 0.0:
        raise ValueError(f"{where}: alpha and beta sum to {float(scale)}; they are divided by that total")
    both = torch.stack([alpha, beta]) / scale
    return list(both.split(list(channels), dim=1))


def load_channel_weights(source: Union[str, os.PathLike], channels: Sequence[int],
                         lpips_net: Optional[str] = None) -> Tuple[str, List[Tensor]]:
    """The weights a ``lin=`` source names, and which distance they weight: ``("lpips", L x [C_l])`` for
    ``"lpips"`` or an LPIPS lin file, ``("dists", L x [2, C_l])`` for ``"dists"`` or a DISTS weights file."""
    if isinstance(source, str) and source == "dists" or is_dists_weights(_state_unless_named(source)):
        return "dists", load_dists_weights(source, channels)
    return "lpips", load_lin(source, channels, lpips_net)


def _state_unless_named(source: Union[str, os.PathLike]) -> dict:
    """The state dict of a weights file (the small lin/alpha-beta files are read again by their
    loader); empty for the package names ``lpips`` and ``dists``."""
    return {} if isinstance(source, str) and source in ("lpips", "dists") else read_state_dict(Path(source))
