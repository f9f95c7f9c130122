"""Triton kernels of the fused distance op (importing this module touches no device)."""
