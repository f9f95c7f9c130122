"""Low-level baselines (as the LPIPS trainer computes them) and the JND mAP / PS helpers."""

import builtins
import warnings

import numpy as np
import pytest
import torch

from perceptual_fast.bapps.baselines import BASELINES, baseline_distance, lpips_roundtrip, split_distance_names
from perceptual_fast.metrics import category_means, jnd_map, perceptual_score


def images(seed, n=3, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def to_float(x):
    return x.float() / 127.5 - 1


def test_l2_and_psnr_equal_the_lpips_package():
    lpips = pytest.importorskip("lpips", exc_type=ModuleNotFoundError)
    x0, x1 = images(0), images(1)
    x1[1] = x0[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        l2 = lpips.lpips.L2(use_gpu=False, colorspace="Lab")
        want_l2 = [float(l2(to_float(x0[i : i + 1]), to_float(x1[i : i + 1]))) for i in range(3)]
        want_psnr = [-lpips.psnr(lpips.tensor2im(to_float(x0[i : i + 1])), lpips.tensor2im(to_float(x1[i : i + 1])))
                     for i in range(3)]
    assert baseline_distance("l2", x0, x1).tolist() == want_l2
    assert baseline_distance("psnr", x0, x1).tolist() == want_psnr
    assert want_l2[1] == 0 and want_psnr[1] == -np.inf


def test_ssim_is_lpips_dssim_in_lab():
    from skimage import color, metrics

    x0, x1 = images(2), images(3)
    got = baseline_distance("ssim", x0, x1)
    a, b = lpips_roundtrip(x0), lpips_roundtrip(x1)
    for i in range(3):
        lab0, lab1 = (color.rgb2lab(v[i]).astype(np.float32) for v in (a, b))
        want = (1 - metrics.structural_similarity(lab0, lab1, data_range=100, channel_axis=-1, win_size=7)) / 2
        assert float(got[i]) == pytest.approx(want, rel=1e-12)
    assert baseline_distance("ssim", x0, x0).tolist() == [0.0] * 3


def test_lpips_roundtrip_truncates_like_their_loader():
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    back = lpips_roundtrip(levels)[0, :, :, 0].reshape(-1)
    assert back[0] == 0 and back[64:].tolist() == list(range(64, 256))
    assert (back[1:64] == np.arange(0, 63)).all()  # levels 1..63 lose one, as in lpips.tensor2im


def test_baselines_check_inputs_and_explain_a_missing_scikit_image(monkeypatch):
    with pytest.raises(ValueError, match="unknown baseline 'mse'; choose from l2, ssim, psnr"):
        baseline_distance("mse", images(0), images(1))
    with pytest.raises(ValueError, match=r"two uint8 \[N, 3, H, W\] batches"):
        baseline_distance("l2", to_float(images(0)), images(1))
    real_import = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name.startswith("skimage"):
            raise ImportError("No module named 'skimage'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    with pytest.raises(ValueError, match=r"need scikit-image: pip install 'perceptual_fast\[baselines\]'"):
        baseline_distance("l2", images(0), images(1))
    assert split_distance_names(["spatial", " ssim", "style", "psnr", ""]) == (("spatial", "style"), ("ssim", "psnr"))
    assert BASELINES == ("l2", "ssim", "psnr")


def test_jnd_map_equals_lpips_voc_ap_with_ties():
    lpips = pytest.importorskip("lpips", exc_type=ModuleNotFoundError)
    rng = np.random.default_rng(0)
    for n in (7, 40, 300):
        d = rng.random(n).astype(np.float32)
        d[::5] = 0.0  # tied distances
        same = rng.integers(0, 6, n) / 5
        order = np.argsort(d.astype(np.float64))
        s = same[order]
        tp, fp = np.cumsum(s), np.cumsum(1 - s)
        want = lpips.voc_ap(tp / (tp + (s.sum() - tp)), tp / (tp + fp))
        assert jnd_map(torch.from_numpy(d), torch.from_numpy(same)) == want
    assert jnd_map(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 1.0, 0.0])) == 1.0  # same pairs ranked first
    assert jnd_map(torch.tensor([0.3, 0.2, 0.1]), torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"d and same must be \[N\] each"):
        jnd_map(torch.zeros(3), torch.zeros(4))


def test_category_means_and_ps():
    values = torch.tensor([1.0, 0.0, 0.5, 1.0, 1.0])
    cats = torch.tensor([0, 0, 1, 2, 2])
    assert category_means(values, cats, 3).tolist() == [0.5, 0.5, 1.0]
    assert perceptual_score([0.5, 0.5, 1.0]) == pytest.approx(100 * 2 / 3)  # unweighted: not 70 (3.5 / 5)
    with pytest.raises(ValueError, match="at least one category"):
        perceptual_score([])
