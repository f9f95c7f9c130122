"""The engine's ops, one folder each: the op's API and dispatch (its ``__init__``), its plain-PyTorch
reference and its backend wrappers side by side. ``perceptual_fast.ops.fused_distance`` is the
distance op; the package re-exports its function as ``perceptual_fast.fused_distance``."""
