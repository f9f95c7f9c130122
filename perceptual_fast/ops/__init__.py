"""The engine's ops, one folder each: the op's API and dispatch, its plain-PyTorch reference and its
backend wrappers side by side (see fused_distance/__init__.py)."""

from .fused_distance import fused_distance

__all__ = ["fused_distance"]
