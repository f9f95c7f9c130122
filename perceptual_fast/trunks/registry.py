"""Trunk names -> builders, and loading a trunk with its weights from a local source."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch
from torch import nn

from . import lpips_nets
from .checkpoint import CheckpointError, load_strict, read_state_dict, torch_hub_checkpoint

WeightsSpec = Union[None, str, os.PathLike]


@dataclass(frozen=True)
class TrunkSpec:
    """What the registry knows of a trunk name."""

    name: str
    build: Callable[..., nn.Module]  # build(head=bool)
    lpips_net: Optional[str]  # the `lpips` package's name for it, whose lin files fit its taps
    torchvision_file: Optional[str]  # torchvision's checkpoint file name in the torch hub cache


_TRUNKS: Dict[str, TrunkSpec] = {
    spec.name: spec
    for spec in (
        TrunkSpec("alexnet", lpips_nets.alexnet, "alex", "alexnet-owt-7be5be79.pth"),
        TrunkSpec("vgg16", lpips_nets.vgg16, "vgg", "vgg16-397923af.pth"),
        TrunkSpec("squeezenet1_1", lpips_nets.squeezenet1_1, "squeeze", "squeezenet1_1-b8a52dc0.pth"),
    )
}
_ALIASES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1", "squeezenet": "squeezenet1_1"}


def list_trunks() -> List[str]:
    """The trunk names ``load_trunk`` accepts."""
    return sorted(_TRUNKS)


def trunk_spec(name: str) -> TrunkSpec:
    """The registry entry of ``name`` (LPIPS short names like ``alex`` are accepted)."""
    key = _ALIASES.get(name, name)
    if key not in _TRUNKS:
        raise ValueError(f"unknown trunk {name!r}; available: {', '.join(list_trunks())}")
    return _TRUNKS[key]


def load_trunk(name: str, weights: WeightsSpec = None, seed: int = 0, head: bool = True) -> nn.Module:
    """Builds trunk ``name`` in eval mode with its weights from a local source.

    weights:
      * a path: ``.safetensors``, torch ``.pt``/``.pth`` (read with weights_only=True), or a
        TorchScript archive; loaded strictly (every key and shape must match);
      * ``"torchvision"``: torchvision's own checkpoint, if it is in the local torch hub cache;
      * ``"random"``: a random initialisation seeded with ``seed`` (reproducible; not a
        perceptual metric, but what tests, benchmarks and from-scratch training need).
    head: False builds the classifier on the meta device (taps only: what scoring needs); a
    checkpoint may then omit the classifier entries.
    Nothing is downloaded. Missing weights are an error that says how to give them.
    """
    spec = trunk_spec(name)
    if weights is None:
        raise ValueError(
            f"trunk {spec.name!r} needs weights, and none are downloaded: pass weights='path/to/file' "
            f"(.safetensors, .pt/.pth or a TorchScript archive), weights='torchvision' to read "
            f"{spec.torchvision_file} from your torch hub cache ({Path(torch.hub.get_dir()) / 'checkpoints'}), "
            f"or weights='random' for a seeded random initialisation"
        )
    if isinstance(weights, str) and weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            trunk = spec.build(head=head)
    else:
        trunk = spec.build(head=head)
        if isinstance(weights, str) and weights == "torchvision":
            path = torch_hub_checkpoint(spec.torchvision_file) if spec.torchvision_file else None
            if path is None:
                raise CheckpointError(
                    f"weights='torchvision': {spec.torchvision_file} is not in the torch hub cache "
                    f"({Path(torch.hub.get_dir()) / 'checkpoints'}); nothing is downloaded: copy the file there "
                    f"or pass its path as weights="
                )
        else:
            path = Path(weights)
        skipped = () if head else [k for k in trunk.state_dict() if k.startswith("classifier.")]
        source = f"weights file {str(path)!r}"
        load_strict(trunk, read_state_dict(path), source=source, skipped=skipped, target=f"trunk {spec.name!r}")
    if not head:
        # The meta-device head served the strict key/shape check; drop it so the trunk can move devices.
        trunk.classifier = nn.Identity()
    return trunk.eval()
