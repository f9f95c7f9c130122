"""Several processes of one job under ``torchrun``: this process's rank and the world size."""

from __future__ import annotations

import os
from typing import Tuple

import torch


def rank_and_world(device: torch.device) -> Tuple[int, int]:
    """(rank, world size): initialises torch.distributed (NCCL for CUDA devices, else gloo) when launched
    by torchrun (WORLD_SIZE > 1); (0, 1) otherwise."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    """Waits for every rank (nothing to wait for in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
