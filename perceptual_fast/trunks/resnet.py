"""ResNets with torchvision's architecture and parameter names, any width, and the paper's ResNet-6.

``depth`` 18/34 use torchvision's BasicBlock, 50/101/152/200 its Bottleneck (ResNet v1.5: the
stride sits on the 3x3 conv), so a torchvision checkpoint loads strictly and gives the same logits.
ResNet-200 uses the stage depths 3/24/36/3 of He et al. 2016 (torchvision has no such model).

``depth=6`` is the ResNet-6 of Kumar et al. 2022: the 7x7/2 stem (conv + BN + ReLU + 3x3/2
max-pool), then 4 stages of ONE block each. A block is a 3x3 conv (stride 1 in stage 1, 2 after)
+ BN, plus a 1x1 projection shortcut with the same stride + BN, added, then ReLU. Its names are
torchvision's: ``layer{s}.0.conv1``, ``layer{s}.0.bn1``, ``layer{s}.0.downsample.{0,1}``.

``width`` multiplies every channel count: the stem and the stage widths 64/128/256/512 become
``max(1, round_half_up(c * width))`` (Bottleneck outputs are 4x that); the trunk records its
``tap_channels``. ``skip_connections=False`` drops the identity/projection paths (the paper's
no-skip study): blocks keep their conv/BN names and have no ``downsample``.

Taps: the outputs of the 4 stages, ``[N, C_s, H/4, W/4]``, ``/8``, ``/16``, ``/32`` (sides rounded
up), i.e. 16/8/4/2 px at 64x64. Head: global average pool + ``fc`` (torchvision's).
ReLUs and the residual add work in place, as torchvision's, on a block's own BN output: the
tap a block reads (its input) is never written.
"""

from typing import List, Tuple

import torch
from torch import Tensor, nn

from ..ops.max_pool2d import max_pool2d_module
from .base import TapTrunk, head_device

_STAGE_DEPTHS = {
    6: [1, 1, 1, 1],
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
    200: [3, 24, 36, 3],
}
DEPTHS = sorted(_STAGE_DEPTHS)


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded half up, at least 1: how the width multiplier sets a layer's channels."""
    return max(1, int(channels * width + 0.5))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int) -> Tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)


class Block(nn.Module):
    """One residual block with torchvision's names: up to three conv/BN pairs ``conv{i}``/``bn{i}``
    with ReLU between them, plus (``skip``) the shortcut: ``downsample`` (1x1 conv + BN) or identity.

    widths: channels in, after conv1, [after conv2, [after conv3]]; kernels/strides: per conv.
    BasicBlock: 3x3/s, 3x3/1; Bottleneck (v1.5): 1x1/1, 3x3/s, 1x1/1; the ResNet-6 block: one 3x3/s.
    x ``[N, widths[0], H, W]`` -> ``[N, widths[-1], ceil(H/s), ceil(W/s)]``.
    """

    def __init__(self, widths: List[int], kernels: List[int], strides: List[int], project: bool, skip: bool):
        super().__init__()
        pairs = [_conv_bn(widths[i], widths[i + 1], kernels[i], strides[i]) for i in range(len(kernels))]
        pairs += [(None, None)] * (3 - len(pairs))
        self.conv1, self.bn1 = pairs[0]
        self.conv2, self.bn2 = pairs[1]
        self.conv3, self.bn3 = pairs[2]
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(*_conv_bn(widths[0], widths[-1], 1, max(strides))) if skip and project else None
        self.skip = skip

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn1(self.conv1(x))
        if self.conv2 is not None and self.bn2 is not None:
            y = self.bn2(self.conv2(self.relu(y)))
        if self.conv3 is not None and self.bn3 is not None:
            y = self.bn3(self.conv3(self.relu(y)))
        if self.skip:
            # In place, as torchvision: y is this block's own BN output (no tap, no saved tensor);
            # x, the previous stage's tap, is only read.
            y += self.downsample(x) if self.downsample is not None else x
        return self.relu(y)


class ResNet(TapTrunk):
    """torchvision's ResNet (``conv1``/``bn1``/``maxpool``, ``layer1..4``, ``avgpool``, ``fc``), any depth/width.

    depth: 6, 18, 34, 50, 101, 152 or 200. width: channel multiplier (> 0). skip_connections:
    False removes every shortcut. num_classes: size of ``fc``. head: False builds ``fc`` on the
    meta device (see registry.load_trunk). Random init as torchvision's (Kaiming-normal convs,
    unit BN, PyTorch-default ``fc``); the body is initialised before the head exists so it is
    the same with or without it.
    """

    HEAD = "fc"

    def __init__(
        self, depth: int = 18, width: float = 1.0, skip_connections: bool = True, num_classes: int = 1000, head: bool = True
    ):
        super().__init__()
        if depth not in _STAGE_DEPTHS:
            raise ValueError(f"ResNet depth {depth} is not one of {DEPTHS}")
        if not width > 0:
            raise ValueError(f"ResNet width multiplier must be > 0, got {width}")
        inplanes = scaled(64, width)
        self.conv1 = nn.Conv2d(3, inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = []
        for stage, blocks in enumerate(_STAGE_DEPTHS[depth]):
            planes = scaled(64 * 2**stage, width)
            layer = []
            for j in range(blocks):
                stride = 2 if stage > 0 and j == 0 else 1
                widths, kernels, strides = _block_plan(depth, inplanes, planes, stride)
                project = depth == 6 or (j == 0 and (stride != 1 or inplanes != widths[-1]))
                layer.append(Block(widths, kernels, strides, project, skip_connections))
                inplanes = widths[-1]
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layer))
            channels.append(inplanes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        with head_device(head):
            self.fc = nn.Linear(inplanes, num_classes)
        self._finish(channels, head)

    @torch.jit.export
    def forward_taps(self, x: Tensor) -> List[Tensor]:
        """x: ``[N, 3, H, W]`` preprocessed images -> the 4 stage outputs ``[N, C_s, H_s, W_s]``."""
        x = self.relu(self.bn1(self.conv1(x)))
        if torch.jit.is_scripting():
            x = self.maxpool(x)
        else:  # eager: no argmax indices where it can (ops.max_pool2d)
            x = max_pool2d_module(self.maxpool, x)
        t1 = self.layer1(x)
        t2 = self.layer2(t1)
        t3 = self.layer3(t2)
        t4 = self.layer4(t3)
        return [t1, t2, t3, t4]

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[N, 3, H, W]`` preprocessed images -> logits ``[N, num_classes]``."""
        self._require_head()
        return self.fc(torch.flatten(self.avgpool(self.forward_taps(x)[-1]), 1))

    def tap_shapes(self, height: int, width: int) -> List[Tuple[int, int, int]]:
        """``(C, H, W)`` of the 4 taps: every strided conv/pool here (padding k//2) gives ``ceil(side / stride)``."""
        h, w = -(-height // 4), -(-width // 4)  # stem conv /2, max-pool /2
        shapes = []
        for stage, c in enumerate(self.tap_channels):
            if stage > 0:
                h, w = -(-h // 2), -(-w // 2)
            shapes.append((c, h, w))
        return shapes


def _block_plan(depth: int, inplanes: int, planes: int, stride: int) -> Tuple[List[int], List[int], List[int]]:
    """Channels, kernel sizes and strides of one block's conv chain (see ``Block``)."""
    if depth == 6:
        return [inplanes, planes], [3], [stride]
    if depth < 50:
        return [inplanes, planes, planes], [3, 3], [stride, 1]
    return [inplanes, planes, planes, 4 * planes], [1, 3, 1], [1, stride, 1]
