"""Reading weights from local files, and strict loading into a module.

Formats: ``.safetensors``; torch ``.pt``/``.pth``/``.bin`` read with ``weights_only=True`` (state
dicts nested under ``state_dict``/``model`` and ``module.``-style prefixes are unwrapped);
TorchScript archives (their parameters and buffers). Nothing is ever downloaded.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Collection, Dict, Iterable, Mapping, Optional

import torch
from torch import Tensor, nn

_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.", "model.")


class CheckpointError(ValueError):
    """A weights file that cannot be read, or that does not fit the module it is loaded into."""


def read_state_dict(path: str | os.PathLike) -> Dict[str, Tensor]:
    """Reads a flat ``{name: Tensor}`` from a local weights file, on the CPU.

    Raises CheckpointError naming the file and what is wrong with it (missing, truncated or
    corrupt, not a state dict).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist (nothing is downloaded: give a local file)")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        return _read_torchscript(path)
    return _read_torch_pickle(path)


def _read_safetensors(path: Path) -> Dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read safetensors file {str(path)!r}: {err} (is it truncated or corrupt?)") from err


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _read_torchscript(path: Path) -> Dict[str, Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; archives still load
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"cannot read TorchScript archive {str(path)!r}: {err}") from err
    return {k: v.detach() for k, v in module.state_dict().items()}


def _read_torch_pickle(path: Path) -> Dict[str, Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad pickles/zips; all mean "unreadable"
        raise CheckpointError(
            f"cannot read torch checkpoint {str(path)!r} with weights_only=True: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''} (is it truncated or corrupt, or not a state dict?)"
        ) from err
    return unwrap_state_dict(obj, source=str(path))


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
