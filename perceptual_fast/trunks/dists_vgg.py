"""``dists_vgg16``: the trunk of DISTS (Ding et al., TPAMI 2020), VGG-16 with L2 pooling.

torchvision's VGG-16 ``features`` with its first four max pools (``features.4``, ``.9``, ``.16``,
``.23``) replaced by DISTS's L2 pooling, which has no parameters: a torchvision VGG-16 checkpoint
loads strictly as it is. Six taps: the input image in [0, 1] (3 channels), then relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3 (64, 128, 256, 512, 512).

The trunk receives images in LPIPS's scaled space, ``(x - shift) / scale`` of [-1, 1] images
(``preprocess.scaled_batch``). That is DISTS's ImageNet normalisation ``(u - mean) / std`` of
[0, 1] images ``u = (x + 1) / 2``, since ``2 mean - 1 = shift`` and ``2 std = scale``; the image
tap ``u`` is recovered from it with one per-channel affine map.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..preprocess import SCALE, SHIFT
from .base import SequentialTapTrunk
from .lpips_nets import vgg16_trunk

L2_POOL_EPS = 1e-12
"""Added under the square root of DISTS's L2 pooling."""


class L2Pooling(nn.Module):
    """DISTS's L2 pooling: ``sqrt(conv(x^2, g) + 1e-12)``, ``g`` the 3x3 outer product of the inner
    taps of a 5-point Hanning window (``[0.5, 1, 0.5]``), normalised to sum 1; stride 2, padding 1,
    per channel. ``[N, C, H, W]`` -> ``[N, C, (H - 1) // 2 + 1, (W - 1) // 2 + 1]``.

    The window is a non-persistent buffer: it is fixed, and stays out of the state dict so a
    torchvision checkpoint loads strictly. ``kernel_size``/``stride``/``padding``/``dilation``
    describe the window for the trunk's shape arithmetic.
    """

    def __init__(self, channels: int):
        super().__init__()
        # instance attributes (TorchScript reads no class attributes)
        self.kernel_size, self.stride, self.padding, self.dilation = 3, 2, 1, 1
        self.eps = L2_POOL_EPS
        a = np.hanning(5)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        g = g / g.sum()
        self.channels = channels
        self.register_buffer("window", g[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.conv2d(x * x, self.window, stride=self.stride, padding=self.padding, groups=self.channels)
        return torch.sqrt(out + self.eps)


class UnitImage(nn.Module):
    """The [0, 1] image ``(x + 1) / 2`` from LPIPS-scaled input ``x' = (x - shift) / scale``:
    ``x' * scale / 2 + (shift + 1) / 2`` per channel. ``[N, 3, H, W]`` -> the same shape."""

    def __init__(self):
        super().__init__()
        scale = torch.tensor(SCALE, dtype=torch.float64).view(1, 3, 1, 1)
        shift = torch.tensor(SHIFT, dtype=torch.float64).view(1, 3, 1, 1)
        self.register_buffer("gain", (scale / 2).float(), persistent=False)
        self.register_buffer("offset", ((shift + 1) / 2).float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.offset, x, self.gain)


_L2_POOL_AT = (4, 9, 16, 23)
"""``features`` indices of the max pools DISTS replaces (the last pool, 30, is past the taps)."""


def dists_vgg16(num_classes: int = 1000, dropout: float = 0.5, head: bool = True) -> SequentialTapTrunk:
    """DISTS's VGG-16: torchvision's VGG-16 with L2 pooling; taps image, relu1_2 .. relu5_3
    (channels 3, 64, 128, 256, 512, 512). torchvision-style random init (no pretrained weights here)."""

    def pool(index: int, channels: int) -> nn.Module:
        return L2Pooling(channels) if index in _L2_POOL_AT else nn.MaxPool2d(kernel_size=2, stride=2)

    return vgg16_trunk(num_classes, dropout, head, pool, input_tap=UnitImage())
