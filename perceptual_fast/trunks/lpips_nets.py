"""The three LPIPS trunks with torchvision's architecture and parameter names.

``alexnet``, ``vgg16`` and ``squeezenet1_1`` are built exactly as torchvision builds them
(features + avgpool + classifier), so a torchvision checkpoint loads strictly; the taps are the
post-ReLU outputs LPIPS uses (its ``pretrained_networks`` slices): 5, 5 and 7 of them.
ReLUs are in-place, as torchvision's (they overwrite a convolution's fresh output, never a tap:
every tap is followed by a pooling or convolution layer, which ``SequentialTapTrunk`` checks).

``head=False`` builds the classifier on the meta device: its parameter names and shapes still
take part in strict loading, but it costs no memory or init time (VGG-16's head alone is 124M
parameters the taps never use). The features are initialised identically either way.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import Tensor, nn

from ..ops.conv2d_relu import conv2d_relu
from ..ops.inference import plain
from .base import SequentialTapTrunk, head_device, init_like_torchvision


def alexnet(num_classes: int = 1000, dropout: float = 0.5, head: bool = True) -> SequentialTapTrunk:
    """torchvision AlexNet; taps relu1..relu5 (channels 64, 192, 384, 256, 256). PyTorch default init."""
    features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    with head_device(head):
        classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
    return SequentialTapTrunk(
        features, [1, 4, 7, 9, 11], [64, 192, 384, 256, 256], nn.AdaptiveAvgPool2d((6, 6)), classifier, True, head
    )


VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
"""torchvision's VGG-16 features: output channels of each 3x3 convolution (each followed by a ReLU), "M" a pool."""


def vgg16_classifier(num_classes: int, dropout: float) -> nn.Sequential:
    """torchvision's VGG-16 classifier (uninitialised: the caller runs ``init_like_torchvision``)."""
    return nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(4096, num_classes),
    )


VGG16_TAPS = [3, 8, 15, 22, 29]
"""``features`` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""


def vgg16_trunk(num_classes: int, dropout: float, head: bool, pool: Callable[[int, int], nn.Module],
                input_tap: Optional[nn.Module] = None) -> SequentialTapTrunk:
    """torchvision's VGG-16 (no batch norm) tapped at ``VGG16_TAPS``, with ``pool(index, channels)`` making
    the pool at ``features[index]`` after ``channels`` channels (torchvision: 2x2 max pools), and the
    optional ``input_tap`` as a first tap. Parameter names and initialisation are torchvision's."""
    layers: List[nn.Module] = []
    in_ch = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(pool(len(layers), in_ch))
        else:
            layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = int(v)
    features = nn.Sequential(*layers)
    # Initialise the features before the head exists so they are the same with or without it.
    init_like_torchvision(features)
    with head_device(head):
        classifier = vgg16_classifier(num_classes, dropout)
    init_like_torchvision(classifier)
    channels = [3] * (input_tap is not None) + [64, 128, 256, 512, 512]
    return SequentialTapTrunk(features, VGG16_TAPS, channels, nn.AdaptiveAvgPool2d((7, 7)), classifier, True, head,
                              input_tap=input_tap)


def vgg16(num_classes: int = 1000, dropout: float = 0.5, head: bool = True) -> SequentialTapTrunk:
    """torchvision VGG-16 (no batch norm); taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
    return vgg16_trunk(num_classes, dropout, head, lambda index, channels: nn.MaxPool2d(kernel_size=2, stride=2))


class Fire(nn.Module):
    """SqueezeNet's Fire module with torchvision's parameter names."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def _plain(self) -> bool:
        """Whether the convolutions and ReLUs are plain modules without hooks (ops.inference.plain)."""
        return all(plain(m, nn.Conv2d) for m in (self.squeeze, self.expand1x1, self.expand3x3)) and all(
            plain(m, nn.ReLU) for m in (self.squeeze_activation, self.expand1x1_activation, self.expand3x3_activation))

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if self._plain():  # eager: each ReLU fused where it can be (ops.conv2d_relu)
                x = conv2d_relu(x, self.squeeze)
                return torch.cat([conv2d_relu(x, self.expand1x1), conv2d_relu(x, self.expand3x3)], 1)
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1)


def squeezenet1_1(num_classes: int = 1000, dropout: float = 0.5, head: bool = True) -> SequentialTapTrunk:
    """torchvision SqueezeNet 1.1; 7 taps (channels 64, 128, 256, 384, 384, 512, 512)."""
    features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=3, stride=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(64, 16, 64, 64),
        Fire(128, 16, 64, 64),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(128, 32, 128, 128),
        Fire(256, 32, 128, 128),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(256, 48, 192, 192),
        Fire(384, 48, 192, 192),
        Fire(384, 64, 256, 256),
        Fire(512, 64, 256, 256),
    )
    # torchvision's SqueezeNet init: Kaiming-uniform convs, a small normal final conv, zero biases.
    # The features are initialised before the head exists so they are the same with or without it.
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    with head_device(head):
        final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
        classifier = nn.Sequential(nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))
    nn.init.normal_(final_conv.weight, mean=0.0, std=0.01)
    nn.init.zeros_(final_conv.bias)
    return SequentialTapTrunk(
        features, [1, 4, 7, 9, 10, 11, 12], [64, 128, 256, 384, 384, 512, 512], nn.Identity(), classifier, False, head
    )
