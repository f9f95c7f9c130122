"""The reference distances: independent float64 checks, gradients, shapes."""

import numpy as np
import pytest
import torch

from perceptual_fast.ops.fused_distance import reference as D


def _np_normalize(y):  # y: [C, HW] float64
    return y / (np.sqrt((y**2).sum(0, keepdims=True)) + 1e-10)


def np_meanpool(y0, y1):
    """Independent float64 meanpool term, one sample at a time, with numpy."""
    out = []
    for a, b in zip(y0, y1):
        m0 = a.reshape(a.shape[0], -1).mean(1)
        m1 = b.reshape(b.shape[0], -1).mean(1)
        n0 = m0 / (np.linalg.norm(m0) + 1e-10)
        n1 = m1 / (np.linalg.norm(m1) + 1e-10)
        out.append(((n0 - n1) ** 2).sum() / a.shape[0])
    return np.array(out)


def np_style(y0, y1):
    """Independent float64 style term: Gram matrices of normalised features, with numpy."""
    out = []
    for a, b in zip(y0, y1):
        c, hw = a.shape[0], a.shape[1] * a.shape[2]
        g0 = _np_normalize(a.reshape(c, hw)) @ _np_normalize(a.reshape(c, hw)).T / hw
        g1 = _np_normalize(b.reshape(c, hw)) @ _np_normalize(b.reshape(c, hw)).T / hw
        out.append(((g0 - g1) ** 2).sum() / c**2)
    return np.array(out)


def np_spatial(y0, y1, w=None):
    out = []
    for a, b in zip(y0, y1):
        c = a.shape[0]
        d = (_np_normalize(a.reshape(c, -1)) - _np_normalize(b.reshape(c, -1))) ** 2
        if w is not None:
            d = d * w[:, None]
        out.append(d.sum(0).mean())
    return np.array(out)


def np_dists(y0, y1, alpha, beta):
    """Independent float64 DISTS layer term, the DISTS paper's way: S1 and S2 from means, variances
    and covariance, then sum alpha (1 - S1) + beta (1 - S2), with numpy."""
    out = []
    for a, b in zip(y0, y1):
        a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        ma, mb = a.mean(1), b.mean(1)
        va, vb = a.var(1), b.var(1)
        cov = ((a - ma[:, None]) * (b - mb[:, None])).mean(1)
        s1 = (2 * ma * mb + 1e-6) / (ma**2 + mb**2 + 1e-6)
        s2 = (2 * cov + 1e-6) / (va + vb + 1e-6)
        out.append((alpha * (1 - s1) + beta * (1 - s2)).sum())
    return np.array(out)


SHAPES = [(3, 3, 17, 23), (1, 64, 15, 15), (2, 5, 1, 1), (4, 32, 8, 3)]


def _weight(name, channels, seed=0):
    """What ``layer_term`` takes for ``name``: lpips ``[C]``, dists ``[2, C]`` (alpha; beta), else None (float64)."""
    g = torch.Generator().manual_seed(seed)
    shape = {"lpips": (channels,), "dists": (2, channels)}.get(name)
    return None if shape is None else torch.rand(shape, dtype=torch.float64, generator=g) + 0.1


def _features(shape, seed):
    g = torch.Generator().manual_seed(seed)
    # ReLU-like: non-negative with exact zeros, as real taps are.
    y0 = torch.relu(torch.randn(shape, generator=g, dtype=torch.float64))
    y1 = torch.relu(y0 + 0.5 * torch.randn(shape, generator=g, dtype=torch.float64))
    return y0, y1


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("shape", SHAPES)
def test_meanpool_and_style_match_independent_float64(shape, dtype, tol):
    y0, y1 = _features(shape, seed=sum(shape))
    want_m, want_s = np_meanpool(y0.numpy(), y1.numpy()), np_style(y0.numpy(), y1.numpy())
    got_m = D.meanpool_term(y0.to(dtype), y1.to(dtype)).double().numpy()
    got_s = D.style_term(y0.to(dtype), y1.to(dtype)).double().numpy()
    assert want_m.min() > 0 and want_s.min() > 0
    np.testing.assert_allclose(got_m, want_m, rtol=tol, atol=0)
    np.testing.assert_allclose(got_s, want_s, rtol=tol, atol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", SHAPES)
def test_dists_matches_independent_float64(shape, dtype, tol):
    """The difference form equals the paper's S1/S2 form; float32 stays within 1e-5 of float64."""
    y0, y1 = _features(shape, seed=2 + sum(shape))
    w = _weight("dists", shape[1], seed=3)
    want = np_dists(y0.numpy(), y1.numpy(), *w.numpy())
    got = D.dists_term(y0.to(dtype), y1.to(dtype), w).double().numpy()
    assert want.min() > 0
    np.testing.assert_allclose(got, want, rtol=tol, atol=1e-14)


def test_dists_of_flat_and_equal_channels():
    """Equal maps give exactly 0; a brightness shift costs only the mean term (var(a - x) = 0); constant
    channels (no variance: S2 = c2 / c2 = 1) cost only their mean term, as in the paper's form."""
    y = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    w = _weight("dists", 3)
    assert not D.dists_term(y, y.clone(), w).any()
    shifted = D.dists_term(y, y + 0.25, w)
    m = y.mean(dim=(2, 3))
    mean_only = (w[0] * (0.25**2 / (m**2 + (m + 0.25) ** 2 + 1e-6))).sum(1)
    torch.testing.assert_close(shifted, mean_only, rtol=1e-9, atol=1e-15)
    flat = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64)
    np.testing.assert_allclose(D.dists_term(flat, flat * 2, w).numpy(), np_dists(flat.numpy(), (flat * 2).numpy(), *w.numpy()),
                               rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_spatial_matches_independent_float64(shape):
    y0, y1 = _features(shape, seed=1 + sum(shape))
    w = torch.rand(shape[1], dtype=torch.float64)
    np.testing.assert_allclose(D.spatial_term(y0, y1).numpy(), np_spatial(y0.numpy(), y1.numpy()), rtol=1e-12)
    np.testing.assert_allclose(D.spatial_term(y0, y1, w).numpy(), np_spatial(y0.numpy(), y1.numpy(), w.numpy()), rtol=1e-12)


def test_layer_terms_shapes_and_sum():
    feats0 = [torch.rand(3, c, h, w) for c, h, w in [(4, 9, 9), (8, 5, 7), (16, 1, 1)]]
    feats1 = [torch.rand_like(f) for f in feats0]
    weights = {name: [_weight(name, f.shape[1], seed=i).float() for i, f in enumerate(feats0)] for name in ("lpips", "dists")}
    terms = D.layer_terms(feats0, feats1, D.DISTANCES, weights["lpips"], weights["dists"])
    assert list(terms) == list(D.DISTANCES)
    for name, t in terms.items():
        assert t.shape == (3, 3) and t.dtype == torch.float32
        for layer in range(3):
            one = D.layer_term(name, feats0[layer], feats1[layer], weights[name][layer] if name in weights else None)
            torch.testing.assert_close(t[:, layer], one)


@pytest.mark.parametrize("name", D.DISTANCES)
def test_gradcheck_float64(name):
    y0, y1 = _features((2, 4, 3, 5), seed=7)
    y0 = (y0 + 0.1).requires_grad_()  # away from ReLU's exact zeros for finite differences
    y1 = (y1 + 0.1).requires_grad_()
    w = _weight(name, 4)
    fn = lambda a, b: D.layer_term(name, a, b, w)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (y0, y1), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", D.DISTANCES)
def test_gradients_finite_at_equal_inputs_and_zero_vectors(name):
    """Equal inputs are the minimum (every term is a sum of squared differences that are exactly 0),
    so the gradient there is exactly 0, zero vectors included; elsewhere it is finite and non-zero."""
    g = torch.Generator().manual_seed(11)
    y = torch.relu(torch.randn(2, 6, 4, 4, dtype=torch.float64, generator=g))
    y[:, :, 0, 0] = 0.0  # an all-zero feature vector at one position
    y[1] = 0.0  # and a whole all-zero sample (meanpool's mean vector is zero)
    w = _weight(name, 6, seed=11)
    for equal, other in ((True, y.clone()), (False, torch.relu(torch.randn(y.shape, dtype=torch.float64, generator=g)))):
        a, b = y.clone().requires_grad_(), other.requires_grad_()
        d = D.layer_term(name, a, b, w)
        assert torch.isfinite(d).all()
        d.sum().backward()
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
        if equal:
            assert not d.any() and not a.grad.any() and not b.grad.any()
        else:
            assert bool((d > 0).all()) and b.grad.abs().sum() > 0


def test_normalize_matches_lpips_formula():
    y = torch.randn(2, 5, 3, 3)
    want = y / (torch.sqrt((y**2).sum(1, keepdim=True)) + 1e-10)
    assert torch.equal(D.normalize_channels(y), want)


def test_bad_names_and_missing_lin():
    with pytest.raises(ValueError, match="unknown distance.*choose from"):
        D.check_distance_names(["lpip"])
    f = [torch.rand(1, 2, 3, 3)]
    with pytest.raises(ValueError, match="'lpips' needs one channel-weight vector per layer"):
        D.layer_terms(f, f, ("lpips",))
