"""ViT family: timm parity (logits, per-block taps, resized position embeddings), presets, tap shapes, errors."""

import warnings

import pytest
import torch

from perceptual_fast.trunks import CheckpointError, load_trunk, trunk_config

timm = pytest.importorskip("timm", exc_type=ModuleNotFoundError)

SMALL = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)


@pytest.fixture(scope="module")
def timm_small():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.models.vision_transformer.VisionTransformer(**SMALL, dynamic_img_size=True)
    with torch.no_grad():  # non-trivial LayerNorm affine params and class token
        for name, p in model.named_parameters():
            if name == "cls_token" or ("norm" in name and name.endswith("bias")):
                p.uniform_(-1.0, 1.0)
            elif "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def ours_small(timm_small, tmp_path_factory):
    path = tmp_path_factory.mktemp("vit") / "timm.pth"
    torch.save(timm_small.state_dict(), path)
    return {taps: load_trunk("vit_t_8", weights=path, taps=taps, **{k: v for k, v in SMALL.items() if k != "patch_size"})
            for taps in ("cls", "patch")}


@pytest.mark.parametrize("side", [32, 64, 16])  # 32: the weights' grid; 64, 16: position embeddings resampled
def test_timm_checkpoint_loads_strictly_and_matches(side, timm_small, ours_small):
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(ours_small["cls"](x), timm_small(x), rtol=1e-5, atol=1e-5)
        both = timm_small.forward_intermediates(x, norm=False, output_fmt="NCHW", intermediates_only=True, return_prefix_tokens=True)
        grids, prefix = zip(*both)
        cls_taps, patch_taps = ours_small["cls"].forward_taps(x), ours_small["patch"].forward_taps(x)
    assert len(cls_taps) == len(patch_taps) == SMALL["depth"]
    for got_cls, got_grid, want_grid, want_prefix in zip(cls_taps, patch_taps, grids, prefix, strict=True):
        assert got_cls.shape == (2, 48, 1, 1) and got_grid.shape == (2, 48, side // 8, side // 8)
        torch.testing.assert_close(got_cls, want_prefix[:, 0, :, None, None], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_grid, want_grid, rtol=1e-5, atol=1e-5)


def test_vit_b8_depth2_taps_at_64():
    cls = load_trunk("vit_b_8", weights="random", head=False, depth=2)
    patch = load_trunk("vit_b_8", weights="random", head=False, depth=2, taps="patch")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert [tuple(t.shape[1:]) for t in cls.forward_taps(x)] == cls.tap_shapes(64, 64) == [(768, 1, 1)] * 2
        assert [tuple(t.shape[1:]) for t in patch.forward_taps(x)] == patch.tap_shapes(64, 64) == [(768, 8, 8)] * 2
    assert cls.tap_channels == [768, 768] and cls.min_input_size() == patch.min_input_size() == 8


def test_presets():
    want = {"t": (192, 3, 12), "s": (384, 6, 12), "b": (768, 12, 12), "l": (1024, 16, 24)}
    for size, (width, heads, depth) in want.items():
        for p in (4, 8, 16):
            config = trunk_config(f"vit_{size}_{p}")
            assert (config["embed_dim"], config["num_heads"], config["depth"], config["patch_size"]) == (width, heads, depth, p)
            assert config["img_size"] == 64 and config["mlp_ratio"] == 4.0 and config["taps"] == "cls"


def test_bad_configs_and_inputs_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="embed_dim 50 is not divisible by num_heads 3"):
        load_trunk("vit_t_8", weights="random", embed_dim=50)
    with pytest.raises(ValueError, match=r"taps='tokens' is not one of \('cls', 'patch'\)"):
        load_trunk("vit_t_8", weights="random", taps="tokens")
    with pytest.raises(ValueError, match=r"takes no \['width'\]; its config keys are \['patch_size', 'embed_dim'"):
        load_trunk("vit_t_8", weights="random", width=2)
    trunk = load_trunk("vit_t_8", weights="random", depth=1, head=False)
    with pytest.raises(ValueError, match="ViT input 60x64 is not a multiple of the patch size 8: resize or crop"):
        trunk.forward_taps(torch.randn(1, 3, 60, 64))
    # weights trained at another size: the position embeddings do not fit; img_size= says which
    torch.save(load_trunk("vit_t_8", weights="random", depth=1, img_size=32).state_dict(), tmp_path / "32.pth")
    with pytest.raises(CheckpointError, match=r"mis-shaped: pos_embed: file \(1, 17, 192\) vs model \(1, 65, 192\)"):
        load_trunk("vit_t_8", weights=tmp_path / "32.pth", depth=1)
    load_trunk("vit_t_8", weights=tmp_path / "32.pth", depth=1, img_size=32).forward_taps(torch.randn(1, 3, 64, 64))
