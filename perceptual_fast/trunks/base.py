"""The trunk interface: a classifier whose ``features`` stack exposes named taps.

A trunk is an ``nn.Module`` (a ``TapTrunk``) with ``forward_taps(x) -> List[Tensor]`` (the feature
maps the distances compare, ``[N, C_l, H_l, W_l]`` float each, in the input's dtype or the autocast
one) and ``forward(x) -> logits`` ``[N, num_classes]``. Parameter names
match the upstream library (torchvision; timm for ViTs) so its checkpoints load strictly as they are.
"""

import contextlib
from typing import Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..ops.conv2d_relu import conv2d_relu
from ..ops.inference import plain
from ..ops.max_pool2d import as_pair, max_pool2d_module, window_output_size


class TapTrunk(nn.Module):
    """What every trunk shares, kept in a form that survives ``torch.jit.script`` and ``torch.jit.save``.

    tap_channels: channel count of each tap, in order (lin weights are checked against it).
    min_side: the smallest square input side for which every tap has a position; scripted
        archives keep it and answer ``min_input_size()`` without the Python class.
    input_multiple: input sides must be multiples of it (a ViT's patch size; 1 for the convnets).
    trunk_config: the JSON config the registry built the trunk from ("" when built directly);
        saved as an archive attribute so an exported trunk still names itself.
    has_head: False when the classifier was built on the meta device and dropped (taps only).
    Subclasses set ``HEAD``, define ``forward_taps`` (exported), ``forward`` and ``tap_shapes(h, w)``, then call
    ``_finish``.
    """

    HEAD = "classifier"  # the attribute holding the classifier (its parameters are named HEAD.*)

    tap_channels: List[int]
    min_side: int
    input_multiple: int
    trunk_config: str
    has_head: bool

    def _finish(self, tap_channels: List[int], has_head: bool, input_multiple: int = 1) -> None:
        self.tap_channels = list(tap_channels)
        self.has_head = has_head
        self.input_multiple = input_multiple
        self.trunk_config = ""
        side = 1
        while min(min(s[1], s[2]) for s in self.tap_shapes(side, side)) < 1:
            side += 1
        self.min_side = side

    def tap_shapes(self, height: int, width: int) -> List[Tuple[int, int, int]]:
        """``(C, H, W)`` of every tap for an input of ``height`` x ``width`` (zero or less: input too small)."""
        raise NotImplementedError

    @torch.jit.export
    def min_input_size(self) -> int:
        """The smallest square side for which every tap has at least one position."""
        return self.min_side

    def drop_head(self) -> None:
        """Replaces the (meta-device) classifier by an identity so the trunk can move devices; taps only after."""
        setattr(self, self.HEAD, nn.Identity())
        self.has_head = False

    def _require_head(self) -> None:
        if not self.has_head:
            raise RuntimeError("this trunk was built with head=False (taps only); load it with head=True for logits")


class SequentialTapTrunk(TapTrunk):
    """A trunk whose taps are outputs of chosen layers of a ``features`` ``nn.Sequential``.

    features: the convolutional stack (torchvision's ``features``), run in order.
    tap_after: indices i such that the output of ``features[i]`` is a tap (ascending).
    channels: channel count of each tap, in order.
    avgpool, classifier: torchvision's head; logits = classifier(avgpool(features(x))), flattened
        before the classifier when ``flatten_before_classifier`` (AlexNet, VGG) and after it always.
    input_tap: a module whose output on the input is the first tap (DISTS's image tap), or None;
        ``channels`` then starts with its channel count.
    """

    tap_after: List[int]

    def __init__(
        self,
        features: nn.Sequential,
        tap_after: List[int],
        channels: List[int],
        avgpool: nn.Module,
        classifier: nn.Module,
        flatten_before_classifier: bool,
        has_head: bool = True,
        input_tap: Optional[nn.Module] = None,
    ):
        super().__init__()
        if sorted(tap_after) != list(tap_after) or len(tap_after) + (input_tap is not None) != len(channels):
            raise ValueError("tap_after must be ascending with one channel count per tap (the input tap's first)")
        overwritten = [i for i in tap_after if i + 1 < len(features) and getattr(features[i + 1], "inplace", False)]
        if overwritten:
            raise ValueError(f"the layers after taps {overwritten} work in place: they would overwrite the taps")
        self.features = features
        self.tap_after = list(tap_after)
        self.avgpool = avgpool
        self.classifier = classifier
        self.flatten_before_classifier = flatten_before_classifier
        self.input_tap = input_tap
        self._finish(channels, has_head)

    @torch.jit.export
    def forward_taps(self, x: Tensor) -> List[Tensor]:
        """x: ``[N, 3, H, W]`` preprocessed images -> the L tap feature maps (stops after the last tap)."""
        if not torch.jit.is_scripting():
            return self._eager_forward_taps(x)
        taps: List[Tensor] = []
        if self.input_tap is not None:
            taps.append(self.input_tap(x))
        last = self.tap_after[-1]
        for i, layer in enumerate(self.features):
            # Layers past the last tap are skipped (not `break`: TorchScript unrolls this loop and
            # has no break); running them could fail on inputs just large enough for the taps.
            if i <= last:
                x = layer(x)
                if i in self.tap_after:
                    taps.append(x)
        return taps

    def _eager_forward_taps(self, x: Tensor) -> List[Tensor]:
        """``forward_taps`` outside TorchScript, with the inference kernels where they apply.

        An untapped convolution followed by a ReLU (which may be a tap) runs as one ``conv2d_relu``
        (the ReLU fused into the convolution); max pools run ``max_pool2d`` (no argmax indices). Only
        plain modules without hooks are replaced (``ops.inference.plain``), and both ops fall back to
        torch's under autograd, tracing and on other devices, so the taps are those of the scripted
        loop above in every case.
        """
        taps: List[Tensor] = []
        if self.input_tap is not None:
            taps.append(self.input_tap(x))
        layers, last, i = self.features, self.tap_after[-1], 0
        while i <= last:
            layer = layers[i]
            if (plain(layer, nn.Conv2d) and i not in self.tap_after and i + 1 < len(layers)
                    and plain(layers[i + 1], nn.ReLU)):
                x = conv2d_relu(x, layer)
                i += 1  # the ReLU is done; x is its output (a tap if i is one)
            elif isinstance(layer, nn.MaxPool2d):
                x = max_pool2d_module(layer, x)
            else:
                x = layer(x)
            if i in self.tap_after:
                taps.append(x)
            i += 1
        return taps

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[N, 3, H, W]`` preprocessed images -> logits ``[N, num_classes]``."""
        self._require_head()
        y = self.avgpool(self.features(x))
        if self.flatten_before_classifier:
            y = torch.flatten(y, 1)
        return torch.flatten(self.classifier(y), 1)

    def tap_shapes(self, height: int, width: int) -> List[Tuple[int, int, int]]:
        """``(C, H, W)`` of every tap for an input of ``height`` x ``width``, by conv/pool arithmetic.

        A tap with a zero or negative side means the input is too small for this trunk.
        """
        h, w = height, width
        shapes = [] if self.input_tap is None else [(self.tap_channels[0], h, w)]
        first = len(shapes)
        for i, layer in enumerate(self.features):
            if i > self.tap_after[-1]:
                break
            h, w = _spatial_out(layer, h, w)
            if i in self.tap_after:
                shapes.append((self.tap_channels[first + self.tap_after.index(i)], h, w))
        return shapes


def _spatial_out(layer: nn.Module, h: int, w: int) -> Tuple[int, int]:
    """Spatial output size of ``layer`` (conv/pool arithmetic, also for pools that describe their window
    like ``dists_vgg.L2Pooling``); other layers keep it."""
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)) or hasattr(layer, "kernel_size"):
        k, s, p, d = (as_pair(layer.kernel_size), as_pair(layer.stride), as_pair(layer.padding), as_pair(layer.dilation))
        ceil = bool(getattr(layer, "ceil_mode", False))
        return (window_output_size(h, k[0], s[0], p[0], d[0], ceil), window_output_size(w, k[1], s[1], p[1], d[1], ceil))
    return h, w


@contextlib.contextmanager
def head_device(materialise: bool) -> Iterator[None]:
    """Builds the modules created inside on the meta device unless ``materialise`` (see head=False)."""
    if materialise:
        yield
    else:
        with torch.device("meta"):
            yield


def init_like_torchvision(module: nn.Module) -> None:
    """Random initialisation in the spirit of torchvision's (Kaiming for convs, small normal for linears)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
