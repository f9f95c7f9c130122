"""Trunks: classifiers whose intermediate feature maps (taps) the distances compare."""

from .checkpoint import CheckpointError, load_strict, read_state_dict
from .registry import list_trunks, load_trunk, trunk_spec

__all__ = ["CheckpointError", "list_trunks", "load_strict", "load_trunk", "read_state_dict", "trunk_spec"]
