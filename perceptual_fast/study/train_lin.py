"""LPIPS calibration ("lin"): non-negative per-channel weights on a frozen trunk, learned from
BAPPS 2AFC training judgements with the LPIPS ranking network and a BCE loss.

The protocol of Zhang et al. 2018 (the ``lpips`` package's trainer): the distance of a pair is
``d = sum_l sum_c w_lc e_lc`` with ``e_lc`` the spatial mean of the squared difference of the
channel-normalised features (exactly the Scorer's ``lpips`` distance); a small network maps
``(d0, d1, d0 - d1, d0 / (d1 + 0.1), d1 / (d0 + 0.1))`` through 32 and 32 LeakyReLU(0.2) units to
the probability that people prefer p1, trained with BCE against ``judge``; Adam (lr 1e-4,
beta1 0.5), batches of 50, ``epochs`` at constant LR then ``decay_epochs`` with the LR falling
linearly to 0; after every step the weights are clamped to be non-negative; dropout (p 0.5) on
the terms entering the lin layers.

One difference, for speed: the trunk is frozen, so each triplet's ``e`` vectors are computed once
(one trunk pass per image) and every epoch trains on them. Dropout therefore drops whole
channels' spatial means ``e_lc`` rather than single positions before the mean; the expectation is
the same.

The result is written as ``lin{l}.model.1.weight`` ``[1, C_l, 1, 1]`` tensors (the ``lpips``
package's file format; ``.pth`` or ``.safetensors``), which ``Scorer(lin=FILE)`` loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bapps.reader import BappsPart
from ..metrics import two_afc
from ..ops.fused_distance.reference import normalize_channels
from ..scorer import Scorer
from ..util.atomic import write_atomically
from ..util.progress import Progress

EPS = 0.1  # the ranking network's ratio guard


class RankingNet(nn.Module):
    """LPIPS's distance-to-logit network: ``d0, d1`` ``[N]`` -> probability ``[N]`` that people prefer p1."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, d0: Tensor, d1: Tensor) -> Tensor:
        x = torch.stack([d0, d1, d0 - d1, d0 / (d1 + EPS), d1 / (d0 + EPS)], dim=1)
        return self.net(x).squeeze(1)


@torch.no_grad()
def channel_terms(scorer: Scorer, part: BappsPart, batch_size: int = 64, progress: bool = True) -> Tuple[List[Tensor], ...]:
    """Per-channel terms of every triplet: (e0, e1), each L float32 tensors ``[N, C_l]``:
    ``e_lc = mean_hw (yhat_ref - yhat_p)^2`` at channel c of tap l (p = p0, p1)."""
    out: Tuple[List[List[Tensor]], List[List[Tensor]]] = ([], [])
    bar = Progress(len(part), "trunk features", "triplets", enabled=progress)
    for _, batch in part.batches(batch_size):
        n = batch["ref"].shape[0]
        taps = scorer.features(torch.cat([batch["ref"], batch["p0"], batch["p1"]]))
        for side in (0, 1):
            out[side].append([((normalize_channels(t[:n]) - normalize_channels(t[(side + 1) * n : (side + 2) * n])) ** 2)
                              .mean(dim=(2, 3)).float().cpu() for t in taps])
        bar.update(n)
    return tuple([torch.cat([chunk[layer] for chunk in side]) for layer in range(len(side[0]))] for side in out)


def lin_distance(weights: Sequence[Tensor], terms: Sequence[Tensor]) -> Tensor:
    """``sum_l terms_l @ weights_l``: ``[N]`` from L terms ``[N, C_l]`` and weights ``[C_l]``."""
    return sum(e @ w for e, w in zip(terms, weights))


@dataclass
class LinResult:
    weights: List[Tensor]  # L float32 [C_l], non-negative
    epoch_loss: List[float]  # mean BCE of each epoch
    train_2afc: float  # mean 2AFC agreement on the training triplets, learned weights
    train_2afc_uniform: float  # the same with all weights 1 (the 'spatial' distance)


def train_lin(scorer: Scorer, part: BappsPart, epochs: int = 5, decay_epochs: int = 5, lr: float = 1e-4,
              batch_size: int = 50, dropout: float = 0.5, seed: int = 0, progress: bool = True) -> LinResult:
    """Learns lin weights for ``scorer``'s trunk on the 2AFC triplets of ``part`` (module docstring)."""
    if part.task != "2afc" or len(part) == 0:
        raise ValueError("train-lin needs 2AFC triplets (a 2afc/train part)")
    e0, e1 = channel_terms(scorer, part, progress=progress)
    judge = part.target.float()
    torch.manual_seed(seed)
    lins = nn.ParameterList()
    for e in e0:
        bound = 1.0 / e.shape[1] ** 0.5  # PyTorch's default init of a 1x1 conv C -> 1
        lins.append(nn.Parameter(torch.empty(e.shape[1]).uniform_(-bound, bound)))
    rank = RankingNet()
    params = [*lins.parameters(), *rank.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(seed)
    n, losses = len(judge), []
    bar = Progress((epochs + decay_epochs) * n, "train-lin", "triplets", enabled=progress)
    for epoch in range(epochs + decay_epochs):
        for group in optimizer.param_groups:  # the lpips trainer: lr falls by lr / decay_epochs after each decay epoch
            group["lr"] = lr * (1 - max(0, epoch - epochs) / max(1, decay_epochs))
        total = 0.0
        for idx in torch.randperm(n, generator=g).split(batch_size):
            d0 = lin_distance(lins, [F.dropout(e[idx], dropout, True) for e in e0])
            d1 = lin_distance(lins, [F.dropout(e[idx], dropout, True) for e in e1])
            loss = F.binary_cross_entropy(rank(d0, d1), judge[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for w in lins:
                    w.clamp_(min=0)
            total += float(loss.detach()) * len(idx)
            bar.update(len(idx))
        losses.append(total / n)
    weights = [w.detach().clone() for w in lins]
    ones = [torch.ones_like(w) for w in weights]
    agree = lambda ws: float(two_afc(lin_distance(ws, e0), lin_distance(ws, e1), judge).mean())  # noqa: E731
    return LinResult(weights, losses, agree(weights), agree(ones))


def save_lin(weights: Sequence[Tensor], path: os.PathLike) -> Path:
    """Writes ``lin{l}.model.1.weight`` ``[1, C_l, 1, 1]`` (lpips format) to ``.pth`` or ``.safetensors``, atomically."""
    state = {f"lin{i}.model.1.weight": w.detach().float().reshape(1, -1, 1, 1).contiguous() for i, w in enumerate(weights)}
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        return write_atomically(path, lambda tmp: save_file(state, str(tmp)))
    if path.suffix not in (".pth", ".pt"):
        raise ValueError(f"lin weights are written as .pth (lpips format) or .safetensors; got {str(path)!r}")
    return write_atomically(path, lambda tmp: torch.save(state, tmp))

