"""ResNet family: torchvision parity, widths, ResNet-6, the no-skip variant, tap shapes."""

import pytest
import torch

from perceptual_fast.trunks import CheckpointError, load_trunk, trunk_config
from perceptual_fast.trunks.resnet import scaled


def torchvision_taps(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    taps = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        taps.append(x)
    return taps


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_checkpoint_loads_strictly_and_matches(depth, tmp_path):
    # Only this test needs torchvision (the reference models); the package itself never imports it.
    torchvision = pytest.importorskip("torchvision", exc_type=ModuleNotFoundError)
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=10)
    with torch.no_grad():  # non-trivial BN statistics so eval-mode BN is exercised
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    reference.eval()
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    ours = load_trunk(f"resnet{depth}", weights=tmp_path / "tv.pth", num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
        for got, want in zip(ours.forward_taps(x), torchvision_taps(reference, x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_width_quarter_resnet50_taps_at_64():
    trunk = load_trunk("resnet50", weights="random", head=False, width=0.25)
    want = [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]  # Bottleneck: 4 x (16, 32, 64, 128)
    assert trunk.tap_shapes(64, 64) == want
    assert trunk.tap_channels == [c for c, _, _ in want]
    with torch.no_grad():
        assert [tuple(t.shape[1:]) for t in trunk.forward_taps(torch.randn(2, 3, 64, 64))] == want


@pytest.mark.parametrize("depth", [6, 18, 34, 50, 101, 152, 200])
def test_every_depth_builds_with_predicted_tap_shapes(depth):
    trunk = load_trunk(f"resnet{depth}", weights="random", head=False, width=0.0625)
    stages = {6: 1, 18: 2, 34: 3, 50: 3, 101: 3, 152: 3, 200: 3}[depth]
    assert len(trunk.layer1) == stages and len(trunk.layer3) == {6: 1, 18: 2, 34: 6, 50: 6, 101: 23, 152: 36, 200: 36}[depth]
    with torch.no_grad():
        for h, w in [(64, 64), (37, 50), (1, 1)]:
            assert [tuple(t.shape[1:]) for t in trunk.forward_taps(torch.randn(1, 3, h, w))] == trunk.tap_shapes(h, w)
    assert trunk.min_input_size() == 1


def test_width_rounding_is_recorded():
    assert [scaled(64, w) for w in (0.0625, 0.3, 1 / 3, 1.5, 0.001)] == [4, 19, 21, 96, 1]
    trunk = load_trunk("resnet18", weights="random", head=False, width=0.3)
    assert trunk.tap_channels == [19, 38, 77, 154]
    assert trunk.conv1.out_channels == 19
    assert trunk_config("resnet18", width=0.3)["width"] == 0.3
    with pytest.raises(ValueError, match="width multiplier must be > 0"):
        load_trunk("resnet18", weights="random", width=0)


def test_resnet6_is_the_papers():
    trunk = load_trunk("resnet6", weights="random")
    assert trunk.tap_shapes(64, 64) == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    names = [k for k in trunk.state_dict() if k.startswith("layer") and k.endswith("weight")]
    per_stage = [
        f"layer{s}.0.{n}.weight" for s in range(1, 5) for n in ("conv1", "bn1", "downsample.0", "downsample.1")
    ]
    assert names == per_stage  # ONE block per stage: 3x3 conv + BN and a 1x1 projection + BN
    for s, stride in zip(range(1, 5), (1, 2, 2, 2)):
        block = getattr(trunk, f"layer{s}")[0]
        assert block.conv1.kernel_size == (3, 3) and block.conv1.stride == (stride, stride)
        assert block.downsample[0].kernel_size == (1, 1) and block.downsample[0].stride == (stride, stride)
    # the block computes relu(bn1(conv1(x)) + bn(proj(x)))
    block, x = trunk.layer2[0], torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        want = torch.relu(block.bn1(block.conv1(x)) + block.downsample(x))
        torch.testing.assert_close(block(x), want)


@pytest.mark.parametrize("depth", [6, 18, 50])
def test_no_skip_variant_keeps_names_and_drops_shortcuts(depth, tmp_path):
    skip = load_trunk(f"resnet{depth}", weights="random", width=0.125)
    plain = load_trunk(f"resnet{depth}", weights="random", width=0.125, skip_connections=False)
    plain_keys = set(plain.state_dict())
    assert plain_keys == {k for k in skip.state_dict() if ".downsample." not in k}
    block = plain.layer2[0]
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        y = block.bn1(block.conv1(x))
        for i in (2, 3):
            conv, bn = getattr(block, f"conv{i}", None), getattr(block, f"bn{i}", None)
            if conv is not None:
                y = bn(conv(torch.relu(y)))
        torch.testing.assert_close(block(x), torch.relu(y))  # no shortcut added
    # a no-skip checkpoint is not a skip model's: strict loading says which entries are missing
    torch.save(plain.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match=r"missing: layer1\.0\.downsample\.0\.weight" if depth != 18 else r"missing: layer2\.0\.downsample"):
        load_trunk(f"resnet{depth}", weights=tmp_path / "plain.pth", width=0.125)
