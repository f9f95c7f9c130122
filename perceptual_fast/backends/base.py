"""The backend contract shared by every implementation of the fused distance op."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

Terms = Dict[str, Tensor]


@dataclass(frozen=True)
class DistanceRequest:
    """One call of the distance op: per-layer feature maps of a pair or a triplet, and what to compute.

    feats: 2 or 3 lists of L tensors ``[N, C_l, H_l, W_l]`` (same shapes across the lists, any
        across layers); every list after the first is compared with the first (a triplet reads
        the reference once for both comparisons).
    distances: names among ``perceptual_fast.distances.DISTANCES``.
    lin: L channel-weight vectors ``[C_l]`` for ``lpips``, else None.
    """

    feats: Tuple[Tuple[Tensor, ...], ...]
    distances: tuple
    lin: Optional[Sequence[Tensor]] = None

    @property
    def tensors(self) -> List[Tensor]:
        return [t for layer_list in self.feats for t in layer_list]

    @property
    def needs_grad(self) -> bool:
        return torch.is_grad_enabled() and any(t.requires_grad for t in self.tensors)


class Backend:
    """An implementation of the fused distance op. Subclasses set ``name`` and implement both methods."""

    name = "?"
    max_batch: Optional[int] = None
    """The most samples one ``compute`` call takes (None: no limit); the dispatcher splits bigger batches."""

    def unsupported(self, request: DistanceRequest) -> List[str]:
        """Why this backend cannot take ``request`` (empty list: it can)."""
        raise NotImplementedError

    def compute(self, request: DistanceRequest) -> List[Terms]:
        """One ``{name: [N, L]}`` per comparison (a-b, then a-c for a triplet)."""
        raise NotImplementedError


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run the request; the message lists its reasons."""
