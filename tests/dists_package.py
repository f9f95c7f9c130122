"""The `DISTS_pytorch` package's model wired to one of our trunks, for the parity test and bench/dists.py."""

import sys
import unittest.mock
from pathlib import Path

import torch

from perceptual_fast.lin import dists_package_weights_file


def package_dists(trunk: torch.nn.Module) -> torch.nn.Module:
    """A `DISTS_pytorch.DISTS` in eval mode whose VGG-16 has ``trunk``'s weights (a ``dists_vgg16``) and
    whose alpha/beta are the package's own file, loaded by the package where it installs it.

    Its builder asks torchvision for pretrained weights: it is patched to build an untrained VGG-16,
    which our weights then replace, mapped by torchvision index (the package names its modules
    ``stageK.<index>``). Raises RuntimeError unless every VGG parameter came from ``trunk``.
    Needs torchvision and DISTS_pytorch (ImportError otherwise).
    """
    import torchvision
    from DISTS_pytorch import DISTS_pt

    build_vgg16 = torchvision.models.vgg16  # the package's `models` is torchvision.models: keep the original
    load_own = Path(sys.prefix, "weights.pt").is_file()  # where the package reads its weights from
    with unittest.mock.patch.object(DISTS_pt.models, "vgg16", lambda *args, **kwargs: build_vgg16(weights=None)):
        model = DISTS_pt.DISTS(load_weights=load_own)
    if not load_own:  # a non-standard install: the same file, from the package folder
        weights = torch.load(dists_package_weights_file(), weights_only=True)
        model.alpha.data, model.beta.data = weights["alpha"], weights["beta"]
    ours = trunk.features.state_dict()
    mapped = {k: ours[".".join(k.split(".")[1:])] for k in model.state_dict()
              if k.startswith("stage") and not k.endswith(".filter")}
    result = model.load_state_dict(mapped, strict=False)
    # every parameter of the VGG came from our trunk (13 convolutions, weight and bias); only the fixed
    # buffers and alpha/beta did not
    fixed = {k for k in model.state_dict() if k.endswith(".filter")} | {"mean", "std", "alpha", "beta"}
    if set(result.missing_keys) != fixed or len(mapped) != 26 or result.unexpected_keys:
        raise RuntimeError(f"the package's VGG-16 did not take all of the trunk's weights: {result}")
    return model.eval()
