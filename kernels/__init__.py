"""Kernels shipped inside the package (installed as perceptual_fast.kernels); only triton/ is Python."""
