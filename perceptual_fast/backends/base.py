"""The backend contract shared by every implementation of the distance op."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class DistanceRequest:
    """One call of the distance op: per-layer feature maps of a pair, and what to compute.

    feats0, feats1: L tensors ``[N, C_l, H_l, W_l]`` (same shapes pairwise, any across layers).
    distances: names among ``perceptual_fast.distances.DISTANCES``.
    lin: L channel-weight vectors ``[C_l]`` for ``lpips``, else None.
    """

    feats0: Sequence[Tensor]
    feats1: Sequence[Tensor]
    distances: tuple
    lin: Optional[Sequence[Tensor]] = None

    @property
    def needs_grad(self) -> bool:
        return torch.is_grad_enabled() and any(t.requires_grad for t in (*self.feats0, *self.feats1))

    def restricted(self, distances: Sequence[str]) -> "DistanceRequest":
        return DistanceRequest(self.feats0, self.feats1, tuple(distances), self.lin)


class Backend:
    """An implementation of the distance op. Subclasses set ``name`` and implement both methods."""

    name = "?"

    def unsupported(self, request: DistanceRequest) -> List[str]:
        """Why this backend cannot take ``request`` (empty list: it can)."""
        raise NotImplementedError

    def layer_terms(self, request: DistanceRequest) -> Dict[str, Tensor]:
        """``{name: [N, L]}`` float32 (float64 where the backend keeps it) for every requested distance."""
        raise NotImplementedError


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run the request; the message lists its reasons."""
