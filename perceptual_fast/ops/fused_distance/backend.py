"""What every backend of the fused distance op shares: the request, the interface, the common
reasons for refusing a request, and the sample-layout views the kernels read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

Terms = Dict[str, Tensor]


@dataclass(frozen=True)
class DistanceRequest:
    """One call of the distance op: per-layer feature maps of a pair or a triplet, and what to compute.

    feats: 2 or 3 lists of L tensors ``[N, C_l, H_l, W_l]`` (same shapes across the lists, any
        across layers); every list after the first is compared with the first (a triplet reads
        the reference once for both comparisons).
    distances: names among ``reference.DISTANCES``.
    lin: L channel-weight vectors ``[C_l]`` for ``lpips``, else None.
    dists_weights: L tensors ``[2, C_l]`` (alpha; beta) for ``dists``, else None.
    """

    feats: Tuple[Tuple[Tensor, ...], ...]
    distances: tuple
    lin: Optional[Sequence[Tensor]] = None
    dists_weights: Optional[Sequence[Tensor]] = None

    @property
    def weights(self) -> List[Tensor]:
        """Every weight tensor the request carries (lpips's and dists's)."""
        return [w for ws in (self.lin, self.dists_weights) if ws is not None for w in ws]

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
    has_backward = False
    """Whether ``backward`` is implemented: the dispatcher then runs the backend under autograd
    (``autograd.FusedDistanceFunction``) when gradients are needed."""

    def unsupported(self, request: DistanceRequest) -> List[str]:
        """Why this backend cannot take ``request`` (empty list: it can)."""
        raise NotImplementedError

    def compute(self, request: DistanceRequest) -> List[Terms]:
        """One ``{name: [N, L]}`` per comparison (a-b, then a-c for a triplet)."""
        raise NotImplementedError

    def backward(self, request: DistanceRequest, grad_terms: List[Terms],
                 needs: Sequence[Sequence[bool]]) -> List[List[Optional[Tensor]]]:
        """The gradient of ``sum_q sum_d <terms_q[d], grad_terms[q][d]>`` with respect to every map:
        ``[list][layer]``, each like that map (its shape and dtype), or None where ``needs[list][layer]``
        is False. ``grad_terms``: one ``{name: [N, L]}`` per comparison, as ``compute`` returns."""
        raise NotImplementedError


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run the request; the message lists its reasons."""


def one_device_reasons(request: DistanceRequest) -> List[str]:
    """A kernel reads every map through pointers of one device: ``cuda:0`` and ``cuda:1`` do not mix."""
    devices = {t.device for t in request.tensors}
    return [] if len(devices) == 1 else [f"all features must be on one device, got {sorted(map(str, devices))}"]


def dtype_and_grad_reasons(request: DistanceRequest, dtypes: Collection[torch.dtype], has_backward: bool = False,
                           grad_dtypes: Collection[torch.dtype] = ()) -> List[str]:
    """Reasons a kernel that takes one dtype among ``dtypes`` cannot run ``request``: with gradients
    needed, it must have a backward, for maps of ``grad_dtypes``, and the lpips weights must not
    require grad (no gradient is computed for them)."""
    reasons = []
    seen = {t.dtype for t in request.tensors}
    if len(seen) != 1 or not seen <= set(dtypes):
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        reasons.append(f"it takes features of one dtype among {names}, got {sorted(map(str, seen))}")
    if request.needs_grad:
        if not has_backward:
            reasons.append("it has no backward and gradients are needed")
        elif not seen <= set(grad_dtypes):
            names = ", ".join(str(d).replace("torch.", "") for d in grad_dtypes)
            reasons.append(f"its backward takes features of one dtype among {names}, got {sorted(map(str, seen))}")
        if any(w.requires_grad for w in request.weights):
            reasons.append("the lpips or dists weights require grad, and its backward gives gradients for the features only")
    return reasons


def _sample_strides_are(t: Tensor, strides: tuple) -> bool:
    """The C, H, W strides of ``t`` are ``strides`` wherever the size is > 1 (the stride of a size-1
    dimension is never used to address an element, and torch leaves it arbitrary: a channels_last
    ``[N, C, 1, 1]`` map or a ``C = 1`` map is laid out like an NCHW one)."""
    return all(size == 1 or have == want for size, have, want in zip(t.shape[1:], t.stride()[1:], strides))


def is_nchw(t: Tensor) -> bool:
    """Samples NCHW-contiguous (channel stride H*W, position stride 1), any batch stride."""
    c, h, w = t.shape[1:]
    return _sample_strides_are(t, (h * w, w, 1))


def is_channels_last(t: Tensor) -> bool:
    """Samples NHWC-contiguous (channel stride 1, position stride C), any batch stride."""
    c, h, w = t.shape[1:]
    return _sample_strides_are(t, (1, w * c, c))


def nchw(t: Tensor) -> Tensor:
    """A view whose samples are NCHW-contiguous, copying only when needed."""
    return t if is_nchw(t) else t.contiguous()
