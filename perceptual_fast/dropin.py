"""``LPIPS``: a drop-in for ``lpips.LPIPS`` on this engine, so a training script changes one import.

    # import lpips; loss_fn = lpips.LPIPS(net="alex")
    import perceptual_fast as pf
    loss_fn = pf.LPIPS(net="alex")              # the same arguments, forward and outputs
    loss = loss_fn(pred, target).mean()        # [N, 1, 1, 1]; normalize=True for [0, 1] images

Same constructor arguments as the package (``pretrained``, ``net``, ``version``, ``lpips``, ``spatial``,
``pnet_rand``, ``model_path``, ...), plus ``weights`` (the trunk's: a local file, ``"torchvision"``
for the torch hub cache, ``"random"``; default ``"torchvision"``, or ``"random"`` with
``pnet_rand=True``), ``device``, ``backend`` and ``precision``. Nothing is downloaded: a missing
weights file is an error that says how to give it. The lin weights are the package's v0.1 files
(``lin="lpips"``, read from the installed ``lpips`` package) or ``model_path``.

Numerically the same function as the package (tested in float64 against it, values and input
gradients, for alex, vgg and squeeze, ``spatial`` on and off). What differs: the trunk is frozen
(``pnet_tune=True`` is refused), the lin weights are buffers, not trainable parameters
(``pretrained=False``, randomly initialised lin layers to train, is refused), and, as the package
does not, the trunk runs only once per input and its backward only for inputs that require grad.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops.fused_distance.reference import spatial_map
from .scorer import Scorer

NETS = {"alex": "alexnet", "vgg": "vgg16", "vgg16": "vgg16", "squeeze": "squeezenet1_1"}
"""The ``lpips`` package's net names -> this engine's trunks."""


class LPIPS(nn.Module):
    """The ``lpips.LPIPS`` module (see the module docstring for what is the same and what differs).

    forward(in0, in1, retPerLayer=False, normalize=False): images ``[N, 3, H, W]`` in [-1, 1] (in
    [0, 1] with ``normalize=True``) -> ``[N, 1, 1, 1]`` (``spatial=True``: ``[N, 1, H, W]``, each
    layer's map upsampled bilinearly to the input size); with ``retPerLayer`` also the per-layer list.
    """

    def __init__(self, pretrained: bool = True, net: str = "alex", version: str = "0.1", lpips: bool = True,
                 spatial: bool = False, pnet_rand: bool = False, pnet_tune: bool = False, use_dropout: bool = True,
                 model_path: Optional[Union[str, os.PathLike]] = None, eval_mode: bool = True, verbose: bool = False,
                 weights: Optional[Union[str, os.PathLike]] = None, device: Union[None, str, torch.device] = None,
                 backend: str = "auto", precision: str = "fp32", seed: int = 0):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"net {net!r} is not one of the lpips package's nets: {', '.join(NETS)}")
        if version != "0.1":
            raise ValueError(f"version {version!r}: only LPIPS v0.1 (the package's default and latest) is provided")
        if pnet_tune:
            raise ValueError("pnet_tune=True (training the trunk) is not supported: the trunk is frozen here; "
                             "use lpips.LPIPS to fine-tune it")
        if lpips and not pretrained and model_path is None:
            raise ValueError("pretrained=False (randomly initialised lin layers, to be trained) is not supported; "
                             "pass pretrained=True (the package's v0.1 lin weights) or model_path=FILE")
        self.net_name, self.spatial, self.lpips, self.version = net, spatial, lpips, version
        self.distance_name = "lpips" if lpips else "spatial"
        trunk_weights = weights if weights is not None else ("random" if pnet_rand else "torchvision")
        self.scorer = Scorer(NETS[net], weights=trunk_weights, lin=(model_path or "lpips") if lpips else None,
                             distances=(self.distance_name,), device=device, backend=backend, precision=precision,
                             seed=seed, check_values=False)
        self.net = self.scorer.trunk  # a submodule, so .to() / .cuda() / state_dict() see it
        for i, w in enumerate(self.scorer.lin or []):
            self.register_buffer(f"lin{i}", w)
        if verbose:
            head = f"lin {model_path or 'lpips'}" if lpips else "baseline (no lin)"
            print(f"perceptual_fast LPIPS: trunk {NETS[net]} ({trunk_weights}), v{version}, {head}, "
                  f"spatial {'on' if spatial else 'off'}")
        if eval_mode:
            self.eval()

    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.cuda()``, ``.double()`` ...: move the trunk and lin buffers, and tell the Scorer."""
        super()._apply(fn, recurse)
        param = next(self.net.parameters())
        self.scorer.device, self.scorer.dtype = param.device, param.dtype
        if self.scorer.lin is not None:
            self.scorer.lin = [getattr(self, f"lin{i}") for i in range(len(self.scorer.lin))]
        return self

    def forward(self, in0: Tensor, in1: Tensor, retPerLayer: bool = False,
                normalize: bool = False) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:
        if normalize:  # [0, 1] -> [-1, 1], as the package
            in0, in1 = 2 * in0 - 1, 2 * in1 - 1
        if self.spatial:
            lin = self.scorer.lin or [None] * len(self.scorer.trunk.tap_channels)
            maps = [spatial_map(t0, t1, w) for t0, t1, w in zip(self.scorer.features(in0), self.scorer.features(in1), lin)]
            res = [F.interpolate(m, size=tuple(in0.shape[2:]), mode="bilinear", align_corners=False) for m in maps]
        else:
            terms = self.scorer.distance(in0, in1, per_layer=True)[self.distance_name]  # [N, L]
            res = [terms[:, i].view(-1, 1, 1, 1) for i in range(terms.shape[1])]
        val = res[0]
        for r in res[1:]:  # the package's order of summation
            val = val + r
        return (val, res) if retPerLayer else val


__all__ = ["LPIPS", "NETS"]
