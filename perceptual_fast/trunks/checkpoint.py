"""Reading weights from local files, and strict loading into a module.

Formats: ``.safetensors``; torch ``.pt``/``.pth``/``.bin`` read with ``weights_only=True`` (state
dicts nested under ``state_dict``/``model`` and ``module.``-style prefixes are unwrapped);
TorchScript archives and ``torch.export`` archives (their parameters and buffers). Nothing is ever
downloaded.

Trunk configs travel with the weights, so a sweep needs only the files: ``save_trunk`` writes a
safetensors file whose metadata key ``perceptual_fast.trunk`` holds the trunk's JSON config
(``{"name": "resnet50", "family": "resnet", "depth": 50, "width": 0.25, ...}``); a torch
checkpoint may carry the same JSON string under that top-level key, an exported TorchScript
archive carries it as its ``trunk_config`` attribute, and a ``torch.export`` archive (``.pt2``) as
its extra file of that name. ``read_checkpoint`` returns it when present.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Collection, Dict, Iterable, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.", "model.")
CONFIG_KEY = "perceptual_fast.trunk"
TAPS_KEY = "perceptual_fast.taps"  # a .pt2 trunk's tap channels, minimum side and input multiple (JSON)
EXPORTED_PREFIX = "trunk."  # a .pt2 trunk's parameters are the trunk's own names under this prefix

TrunkConfig = Dict[str, Any]


class CheckpointError(ValueError):
    """A weights file that cannot be read, or that does not fit the module it is loaded into."""


def read_state_dict(path: str | os.PathLike) -> Dict[str, Tensor]:
    """Reads a flat ``{name: Tensor}`` from a local weights file, on the CPU (see ``read_checkpoint``)."""
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | os.PathLike) -> Tuple[Dict[str, Tensor], Optional[TrunkConfig]]:
    """Reads a local weights file: its flat ``{name: Tensor}`` on the CPU and its trunk config, if it holds one.

    Raises CheckpointError naming the file and what is wrong with it (missing, truncated or
    corrupt, not a state dict, unreadable config).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist (nothing is downloaded: give a local file)")
    if path.suffix == ".safetensors":
        state, config = _read_safetensors(path)
    elif is_exported_program(path):
        program, extra = read_exported(path)
        state, config = exported_state_dict(program), extra[CONFIG_KEY] or None
    elif is_torchscript_archive(path):
        module = load_torchscript(path)
        state = {k: v.detach() for k, v in module.state_dict().items()}
        config = getattr(module, "trunk_config", None) or None
    else:
        state, config = _read_torch_pickle(path)
    return state, _parse_config(config, path)


def _parse_config(text: Optional[str], path: Path) -> Optional[TrunkConfig]:
    if text is None:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{str(path)!r}: its {CONFIG_KEY} metadata is not JSON ({err})") from err
    if not isinstance(config, dict) or "family" not in config:
        raise CheckpointError(f"{str(path)!r}: its {CONFIG_KEY} metadata is not a trunk config with a 'family': {text[:200]}")
    return config


def save_trunk(trunk: nn.Module, path: str | os.PathLike) -> None:
    """Writes ``trunk``'s state dict to a ``.safetensors`` file with its config in the metadata.

    The trunk must come from ``load_trunk`` (which records its config); ``load_trunk(path)`` then
    rebuilds it from the file alone. A head=False trunk is saved without its classifier.
    """
    from safetensors.torch import save_file

    path = Path(path)
    config = getattr(trunk, "trunk_config", "")
    if path.suffix != ".safetensors":
        raise ValueError(f"save_trunk writes .safetensors files (config in the metadata); got {str(path)!r}")
    if not config:
        raise ValueError("save_trunk needs a trunk built by load_trunk (it records the trunk config the file must carry)")
    state = {k: v.detach().contiguous() for k, v in trunk.state_dict().items()}
    save_file(state, str(path), metadata={CONFIG_KEY: config})


def _read_safetensors(path: Path) -> Tuple[Dict[str, Tensor], Optional[str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {}).get(CONFIG_KEY)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read safetensors file {str(path)!r}: {err} (is it truncated or corrupt?)") from err


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding code), not a pickled state dict."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def is_exported_program(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ``torch.export`` archive (a zip with ``archive_format`` and ``models/``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/archive_format") for n in names) and any("/models/" in n for n in names)


def read_exported(path: str | os.PathLike) -> Tuple[torch.export.ExportedProgram, Dict[str, str]]:
    """The program in ``path`` and its perceptual_fast extra files (CheckpointError if unreadable)."""
    extra = {CONFIG_KEY: "", TAPS_KEY: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as err:  # truncated zips and bad graphs raise many types; all mean "unreadable"
        raise CheckpointError(
            f"cannot read torch.export archive {str(path)!r}: {_first_line(err)} "
            "(is it truncated or corrupt, or written by a newer torch?)"
        ) from err
    return program, extra


def exported_state_dict(program: torch.export.ExportedProgram) -> Dict[str, Tensor]:
    """The trunk's parameters and buffers in a program ``export_trunk`` wrote, under the trunk's own names."""
    state = dict(program.state_dict)
    state.update({k: v for k, v in program.constants.items() if isinstance(v, Tensor)})
    return {k[len(EXPORTED_PREFIX):] if k.startswith(EXPORTED_PREFIX) else k: v.detach() for k, v in state.items()}


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """Loads a TorchScript archive on the CPU (CheckpointError if it cannot be read)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; archives still load
            return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"cannot read TorchScript archive {str(path)!r}: {err} (is it truncated or corrupt?)") from err


def _first_line(err: Exception) -> str:
    """``"TypeName: first line of the message"``: torch's loader errors can run to pages."""
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _read_torch_pickle(path: Path) -> Tuple[Dict[str, Tensor], Optional[str]]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad pickles/zips; all mean "unreadable"
        raise CheckpointError(
            f"cannot read torch checkpoint {str(path)!r} with weights_only=True: {_first_line(err)} "
            "(is it truncated or corrupt, or not a state dict?)"
        ) from err
    config = obj.get(CONFIG_KEY) if isinstance(obj, Mapping) else None
    return unwrap_state_dict(obj, source=str(path)), config if isinstance(config, str) else None


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> Dict[str, Tensor]:
    """Finds the tensor dict inside a checkpoint object and strips wrapper prefixes like ``module.``."""
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        nested = [k for k in _NESTED_KEYS if k in obj and isinstance(obj[k], Mapping)]
        if not nested:
            raise CheckpointError(
                f"{source} holds a dict without tensors at the top level or under any of {list(_NESTED_KEYS)}; "
                f"its keys are {sorted(map(str, obj))[:10]}"
            )
        obj = obj[nested[0]]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict")
    state = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _is_tensor_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def load_strict(
    module: nn.Module,
    state: Mapping[str, Tensor],
    source: str = "checkpoint",
    skipped: Collection[str] = (),
    target: Optional[str] = None,
) -> None:
    """Copies ``state`` into ``module`` after checking every key and shape.

    Raises CheckpointError that lists missing, unexpected and mis-shaped entries: a checkpoint
    that does not fit is never loaded partially (LPIPS's strict=False would score with random
    weights without a word). ``skipped``: keys of parts the module does not materialise (a head
    built on the meta device); they may be absent, are shape-checked when present, and are not loaded.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and k not in skipped]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or misshaped:
        raise CheckpointError(
            f"{source} does not fit {target or type(module).__name__} (is it for another architecture?):"
            + _listing("missing", missing)
            + _listing("unexpected", unexpected)
            + _listing("mis-shaped", misshaped)
        )
    module.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=not skipped)


def _listing(label: str, items: Iterable[str], limit: int = 12) -> str:
    items = list(items)
    if not items:
        return ""
    shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
    return f"\n  {len(items)} {label}: {shown}"


def torch_hub_checkpoint(filename: str) -> Optional[Path]:
    """The path of ``filename`` in the local torch hub cache (``$TORCH_HOME/hub/checkpoints``), if present."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    return path if path.is_file() else None
