"""Trunk names -> builders and configs, and loading a trunk with its weights from a local source.

A trunk config is a JSON-able dict: ``name`` (the preset it started from), ``family`` and every
argument of the family's builder (``resnet``: depth, width, skip_connections, num_classes;
``vit``: patch_size, embed_dim, depth, num_heads, mlp_ratio, img_size, taps, num_classes; the
LPIPS nets and ``dists_vgg16``: num_classes, dropout). Built trunks carry it as ``trunk.trunk_config`` (a JSON string,
kept by TorchScript) and ``save_trunk`` writes it into the weights file.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from . import lpips_nets
from .checkpoint import (
    CheckpointError,
    TrunkConfig,
    is_exported_program,
    is_torchscript_archive,
    load_strict,
    load_torchscript,
    read_checkpoint,
    torch_hub_checkpoint,
)
from .dists_vgg import dists_vgg16
from .exported import load_exported
from .resnet import DEPTHS, ResNet
from .vit import VisionTransformer

WeightsSpec = Union[None, str, os.PathLike]

FAMILIES: Dict[str, Callable[..., nn.Module]] = {
    "alexnet": lpips_nets.alexnet,
    "vgg16": lpips_nets.vgg16,
    "squeezenet1_1": lpips_nets.squeezenet1_1,
    "dists_vgg16": dists_vgg16,
    "resnet": ResNet,
    "vit": VisionTransformer,
}


@dataclass(frozen=True)
class TrunkSpec:
    """What the registry knows of a trunk name."""

    name: str
    family: str  # a key of FAMILIES
    preset: Mapping[str, Any] = field(default_factory=dict)  # the family arguments this name fixes
    lpips_net: Optional[str] = None  # the `lpips` package's name for it, whose lin files fit its taps
    torchvision_file: Optional[str] = None  # torchvision's checkpoint file name in the torch hub cache


_TV_RESNET_FILES = {18: "resnet18-f37072fd.pth", 34: "resnet34-b627a593.pth", 50: "resnet50-0676ba61.pth",
                    101: "resnet101-63fe2227.pth", 152: "resnet152-394f9c45.pth"}
# ViT sizes (width, heads; depth 12 except L's 24) as in timm's vit_{tiny,small,base,large}_patch*.
_VIT_SIZES = {"t": (192, 3, 12), "s": (384, 6, 12), "b": (768, 12, 12), "l": (1024, 16, 24)}

_TRUNKS: Dict[str, TrunkSpec] = {
    spec.name: spec
    for spec in (
        TrunkSpec("alexnet", "alexnet", lpips_net="alex", torchvision_file="alexnet-owt-7be5be79.pth"),
        TrunkSpec("squeezenet1_1", "squeezenet1_1", lpips_net="squeeze", torchvision_file="squeezenet1_1-b8a52dc0.pth"),
        TrunkSpec("vgg16", "vgg16", lpips_net="vgg", torchvision_file="vgg16-397923af.pth"),
        TrunkSpec("dists_vgg16", "dists_vgg16", torchvision_file="vgg16-397923af.pth"),
        *(TrunkSpec(f"resnet{d}", "resnet", {"depth": d}, torchvision_file=_TV_RESNET_FILES.get(d)) for d in DEPTHS),
        *(
            TrunkSpec(f"vit_{size}_{p}", "vit", {"patch_size": p, "embed_dim": c, "num_heads": h, "depth": d})
            for size, (c, h, d) in _VIT_SIZES.items()
            for p in (4, 8, 16)
        ),
    )
}
_ALIASES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1", "squeezenet": "squeezenet1_1"}


def list_trunks() -> List[str]:
    """The trunk names ``load_trunk`` accepts, by family: LPIPS nets, ResNets by depth, ViTs by size and patch."""
    return list(_TRUNKS)


def trunk_spec(name: str) -> TrunkSpec:
    """The registry entry of ``name`` (LPIPS short names like ``alex`` are accepted)."""
    key = _ALIASES.get(name, name)
    if key not in _TRUNKS:
        raise ValueError(
            f"unknown trunk {name!r}; available: {', '.join(list_trunks())} "
            "(or the path of an exported trunk, .pt2 or TorchScript, or of a weights file carrying its trunk config)"
        )
    return _TRUNKS[key]


def trunk_config(name: str, **overrides: Any) -> TrunkConfig:
    """The full config of trunk ``name`` with ``overrides`` (e.g. ``width=0.25``): every builder argument.

    An argument the family does not take is an error listing the ones it does.
    """
    spec = trunk_spec(name)
    params = inspect.signature(FAMILIES[spec.family]).parameters
    accepted = [k for k in params if k != "head"]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(f"trunk {spec.name!r} ({spec.family} family) takes no {unknown}; its config keys are {accepted}")
    values = {k: params[k].default for k in accepted}
    return {"name": spec.name, "family": spec.family, **values, **spec.preset, **overrides}


def build_trunk(config: Mapping[str, Any], head: bool = True) -> nn.Module:
    """Builds the (randomly initialised) trunk a config describes, recording the config on it."""
    args = {k: v for k, v in config.items() if k not in ("name", "family")}
    trunk = FAMILIES[config["family"]](**args, head=head)
    trunk.trunk_config = json.dumps(dict(config), sort_keys=True)
    return trunk


def trunk_name(module: nn.Module) -> str:
    """The registry name a trunk was built as (from its recorded config), else its class name."""
    config = getattr(module, "trunk_config", "")
    return json.loads(config)["name"] if config else type(module).__name__


def load_trunk(name_or_path: Union[str, os.PathLike], weights: WeightsSpec = None, seed: int = 0, head: bool = True,
               **config: Any) -> nn.Module:
    """Builds trunk ``name_or_path`` in eval mode with its weights from a local source.

    name_or_path: a name from ``list_trunks()`` (config overrides as keywords, e.g.
      ``load_trunk("resnet50", weights="random", width=0.25)``), or the path of
      * a ``torch.export`` archive (``perceptual-fast export -o trunk.pt2``): an ``ExportedTrunk``
        running the traced program (taps only; ``head`` does not apply);
      * a TorchScript archive (``perceptual-fast export -o trunk.pt``): returned as the scripted module;
      * a weights file carrying a trunk config (``save_trunk``): rebuilt from it alone.
    weights (for a name):
      * a path: ``.safetensors``, torch ``.pt``/``.pth`` (read with weights_only=True), or a
        TorchScript or torch.export archive; loaded strictly (every key and shape must match). A config in the
        file (same trunk name) fills every argument not given as a keyword;
      * ``"torchvision"``: torchvision's own checkpoint, if it is in the local torch hub cache;
      * ``"random"``: a random initialisation seeded with ``seed`` (reproducible; not a
        perceptual metric, but what tests, benchmarks and from-scratch training need).
    head: False builds the classifier on the meta device (taps only: what scoring needs); a
    checkpoint may then omit the classifier entries.
    Nothing is downloaded. Missing weights are an error that says how to give them.
    """
    if not _is_registered(name_or_path):
        return _load_trunk_file(Path(name_or_path), weights, head, config)
    spec = trunk_spec(str(name_or_path))
    if weights is None:
        raise ValueError(
            f"trunk {spec.name!r} needs weights, and none are downloaded: pass weights='path/to/file' "
            f"(.safetensors, .pt/.pth or a TorchScript archive), weights='torchvision' to read "
            f"{spec.torchvision_file or 'its torchvision file'} from your torch hub cache "
            f"({Path(torch.hub.get_dir()) / 'checkpoints'}), or weights='random' for a seeded random initialisation"
        )
    if isinstance(weights, str) and weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            trunk = build_trunk(trunk_config(spec.name, **config), head)
        return _finish_loading(trunk, head)
    if isinstance(weights, str) and weights == "torchvision":
        path = torch_hub_checkpoint(spec.torchvision_file) if spec.torchvision_file else None
        if path is None:
            raise CheckpointError(
                f"weights='torchvision': {spec.torchvision_file or 'trunk ' + repr(spec.name) + ' has no torchvision file; it'} "
                f"is not in the torch hub cache ({Path(torch.hub.get_dir()) / 'checkpoints'}); nothing is downloaded: "
                f"copy the file there or pass its path as weights="
            )
    else:
        path = Path(weights)
    state, stored = read_checkpoint(path)
    if stored is not None and stored.get("name") != spec.name:
        raise CheckpointError(
            f"weights file {str(path)!r} is for trunk {stored.get('name')!r} (its config), not {spec.name!r}: "
            f"load it with load_trunk({str(path)!r})"
        )
    return _load_state(build_trunk(_stored_config(spec.name, stored, config), head), state, path, head)


def _is_registered(name_or_path: Union[str, os.PathLike]) -> bool:
    if isinstance(name_or_path, os.PathLike):
        return False
    if _ALIASES.get(name_or_path, name_or_path) in _TRUNKS:
        return True
    if not Path(name_or_path).exists():
        trunk_spec(name_or_path)  # raises: unknown name, not a file either
    return False


def _load_trunk_file(path: Path, weights: WeightsSpec, head: bool, config: Mapping[str, Any]) -> nn.Module:
    """A trunk from a file alone: a torch.export or TorchScript archive as it is, or a weights file with a config."""
    if weights is not None:
        raise ValueError(f"{str(path)!r} is a file: it holds its own weights, so pass no weights= (got {weights!r})")
    if is_exported_program(path):
        if config:
            raise ValueError(f"{str(path)!r} is a torch.export archive: its config is fixed, it takes no {sorted(config)}")
        return load_exported(path).eval()
    if is_torchscript_archive(path):
        if config:
            raise ValueError(f"{str(path)!r} is a TorchScript archive: its config is fixed, it takes no {sorted(config)}")
        module = load_torchscript(path)
        if not hasattr(module, "forward_taps"):
            raise CheckpointError(
                f"TorchScript archive {str(path)!r} has no forward_taps method: it is not a trunk "
                "(write one with `perceptual-fast export`)"
            )
        return module.eval()
    state, stored = read_checkpoint(path)
    if stored is None:
        raise CheckpointError(
            f"weights file {str(path)!r} carries no trunk config (metadata key 'perceptual_fast.trunk'): "
            f"name the trunk, e.g. load_trunk('resnet50', weights={str(path)!r}), or write the file with save_trunk"
        )
    if stored["name"] not in _TRUNKS:
        raise CheckpointError(f"weights file {str(path)!r} is for trunk {stored['name']!r}, which this version does not know")
    return _load_state(build_trunk(_stored_config(stored["name"], stored, config), head), state, path, head)


def _stored_config(name: str, stored: Optional[Mapping[str, Any]], overrides: Mapping[str, Any]) -> TrunkConfig:
    """Trunk ``name``'s config from a file's config (if any) with explicit ``overrides`` on top."""
    base = {k: v for k, v in (stored or {}).items() if k not in ("name", "family")}
    return trunk_config(name, **{**base, **overrides})


def _load_state(trunk: nn.Module, state: Mapping[str, torch.Tensor], path: Path, head: bool) -> nn.Module:
    """Strict loading (a head=False trunk may lack its classifier entries), then eval mode."""
    skipped = () if head else [k for k in trunk.state_dict() if k.startswith(f"{trunk.HEAD}.")]
    load_strict(trunk, state, source=f"weights file {str(path)!r}", skipped=skipped, target=f"trunk {trunk_name(trunk)!r}")
    return _finish_loading(trunk, head)


def _finish_loading(trunk: nn.Module, head: bool) -> nn.Module:
    if not head:
        # The meta-device head served the strict key/shape check; drop it so the trunk can move devices.
        trunk.drop_head()
    return trunk.eval()
