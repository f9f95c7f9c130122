"""Trunks: classifiers whose intermediate feature maps (taps) the distances compare."""

from .checkpoint import CheckpointError, load_strict, read_checkpoint, read_state_dict, save_trunk
from .exported import ExportedTrunk, export_trunk, load_exported
from .registry import build_trunk, list_trunks, load_trunk, trunk_config, trunk_name, trunk_spec

__all__ = [
    "CheckpointError",
    "ExportedTrunk",
    "export_trunk",
    "load_exported",
    "build_trunk",
    "list_trunks",
    "load_strict",
    "load_trunk",
    "read_checkpoint",
    "read_state_dict",
    "save_trunk",
    "trunk_config",
    "trunk_name",
    "trunk_spec",
]
