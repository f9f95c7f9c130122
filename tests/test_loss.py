"""Perceptual losses: the drop-in ``pf.LPIPS`` against ``lpips.LPIPS`` (values and input gradients in
float64, same weights), gradients only through the inputs that need them, reused target features,
and the loss under CPU autocast."""

import pytest
import torch

import perceptual_fast as pf

TRUNK_OF = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


def _pair(photos, distorted, size=64, n=2):
    x = photos(["astronaut", "coffee", "chelsea"][:n], (size, size + 8), seed=1).double()
    return x, distorted(x.float(), "noise", 0.2, seed=2).double()


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
@pytest.mark.parametrize("spatial", [False, True])
def test_the_drop_in_equals_the_lpips_package_values_and_gradients(net, spatial, photos, distorted, lpips_like):
    ours = pf.LPIPS(net=net, pnet_rand=True, spatial=spatial, precision="fp64")
    theirs = lpips_like(ours.net, TRUNK_OF[net], use_lin=True).double()
    theirs.spatial = spatial
    x, y = _pair(photos, distorted)
    results = []
    for model in (ours, theirs):
        x0 = x.clone().requires_grad_(True)
        val, per_layer = model(x0, y, retPerLayer=True)
        val.sum().backward()
        results.append((val.detach(), [r.detach() for r in per_layer], x0.grad))
    (v, layers, g), (v_ref, layers_ref, g_ref) = results
    assert v.shape == v_ref.shape == ((2, 1, 64, 72) if spatial else (2, 1, 1, 1))
    torch.testing.assert_close(v, v_ref, rtol=1e-6, atol=0)
    for a, b in zip(layers, layers_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12 * float(b.abs().max()))
    torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-6 * float(g_ref.abs().max()))


def test_the_drop_in_baseline_and_normalize_match_the_package(photos, distorted, lpips_like):
    ours = pf.LPIPS(net="alex", lpips=False, pnet_rand=True, precision="fp64")
    theirs = lpips_like(ours.net, "alexnet", use_lin=False).double()
    x, y = _pair(photos, distorted)
    x01, y01 = (x + 1) / 2, (y + 1) / 2
    torch.testing.assert_close(ours(x01, y01, normalize=True), theirs(x01, y01, normalize=True), rtol=1e-6, atol=0)
    # no range check, as the package: unconstrained network outputs are a loss's usual input
    wide = 1.5 * x
    torch.testing.assert_close(ours(wide, y), theirs(wide, y), rtol=1e-6, atol=0)


def test_the_drop_in_moves_with_to_and_refuses_what_it_does_not_do():
    model = pf.LPIPS(net="alex", pnet_rand=True).double()
    assert model.scorer.dtype == torch.float64 and model.lin0.dtype == torch.float64
    x = torch.rand(1, 3, 40, 40, dtype=torch.float64) * 2 - 1
    assert model(x, x.flip(-1)).dtype == torch.float64
    assert set(model.state_dict()) >= {"lin0", "lin4"} and any(k.startswith("net.") for k in model.state_dict())
    with pytest.raises(ValueError, match="pnet_tune=True .* not supported"):
        pf.LPIPS(pnet_tune=True, pnet_rand=True)
    with pytest.raises(ValueError, match="pretrained=False"):
        pf.LPIPS(pretrained=False, pnet_rand=True)
    with pytest.raises(ValueError, match="not one of the lpips package's nets"):
        pf.LPIPS(net="resnet", pnet_rand=True)


def test_only_the_input_that_requires_grad_gets_a_trunk_backward(photos, distorted):
    scorer = pf.Scorer("alexnet", weights="random", distances=("spatial", "style"), precision="fp64")
    x, y = _pair(photos, distorted)
    passes = []
    forward = scorer.trunk.forward_taps
    scorer.trunk.forward_taps = lambda t: passes.append(forward(t)) or passes[-1]
    x0 = x.clone().requires_grad_(True)
    d = scorer.distance(x0, y)
    assert len(passes) == 2 and passes[0][0].shape[0] == passes[1][0].shape[0] == 2
    assert all(t.grad_fn is not None for t in passes[0]) and all(t.grad_fn is None for t in passes[1])
    (d["spatial"] + d["style"]).sum().backward()
    both = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
    d_both = scorer.distance(*both)
    assert len(passes) == 3 and passes[2][0].shape[0] == 4  # both need grad: one pass over the two
    (d_both["spatial"] + d_both["style"]).sum().backward()
    for k in d:
        torch.testing.assert_close(d[k], d_both[k], rtol=1e-12, atol=0)
    torch.testing.assert_close(x0.grad, both[0].grad, rtol=1e-9, atol=1e-12)


def test_a_target_reuses_its_features_and_gives_the_same_loss_and_gradient(photos, distorted):
    scorer = pf.Scorer("alexnet", weights="random", distances=("spatial", "meanpool"), precision="fp64")
    x, y = _pair(photos, distorted)
    target = scorer.target(y)
    assert all(t.grad_fn is None and not t.requires_grad for t in target.taps)
    grads = []
    for other in (target, y):
        x0 = x.clone().requires_grad_(True)
        d = scorer.distance(x0, other, per_layer=True)
        sum(v.sum() for v in d.values()).backward()
        grads.append((d, x0.grad))
    (d_t, g_t), (d_y, g_y) = grads
    for k in d_y:
        torch.testing.assert_close(d_t[k], d_y[k], rtol=1e-12, atol=0)
    torch.testing.assert_close(g_t, g_y, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="must match"):
        scorer.distance(x[:1], target)
    with pytest.raises(ValueError, match="made by another Scorer"):
        pf.Scorer("alexnet", weights="random", precision="fp64").distance(x, target)


def test_the_loss_trains_under_cpu_bf16_autocast(photos, distorted):
    """Under the caller's torch.autocast the trunk runs in bf16; the head accumulates in float32;
    gradients are finite and close to float32's."""
    scorer = pf.Scorer("alexnet", weights="random", distances=("spatial", "style"))  # style: Gram products in float32
    x, y = (t.float() for t in _pair(photos, distorted))
    tap_dtypes = []
    forward = scorer.trunk.forward_taps
    scorer.trunk.forward_taps = lambda t: tap_dtypes.append({v.dtype for v in forward(t)}) or forward(t)
    grads = []
    for autocast in (False, True):
        x0 = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            d = scorer.distance(x0, y)
            loss = (d["spatial"] + d["style"]).mean()
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(x0.grad).all()
        grads.append((float(loss.detach()), x0.grad))
    assert tap_dtypes[0] == {torch.float32} and tap_dtypes[-1] == {torch.bfloat16}  # the trunk really ran in bf16
    (l32, g32), (l16, g16) = grads
    assert l16 == pytest.approx(l32, rel=0.05)
    cos = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
    assert float(cos) > 0.95


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_the_float32_drop_in_runs_the_fused_backward_and_matches_the_package(net, photos, distorted, lpips_like):
    """In float32 on the CPU the head's forward and backward are the cpp kernels (no autograd graph
    through the reference); values and input gradients still match the package to float32 noise."""
    ours = pf.LPIPS(net=net, pnet_rand=True)
    theirs = lpips_like(ours.net, TRUNK_OF[net], use_lin=True)
    x, y = (t.float() for t in _pair(photos, distorted))
    grads = []
    for model in (ours, theirs):
        x0 = x.clone().requires_grad_(True)
        val = model(x0, y)
        val.sum().backward()
        grads.append((val.detach(), x0.grad))
        if model is ours:
            nodes = {type(node).__name__ for node in _graph(val.grad_fn)}
            assert "FusedDistanceFunctionBackward" in nodes and "SqrtBackward0" not in nodes  # no reference head
    (v, g), (v_ref, g_ref) = grads
    torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-4 * float(g_ref.abs().max()))


def _graph(fn):
    """Every node of the autograd graph below ``fn``."""
    seen, todo = set(), [fn]
    while todo:
        for child, _ in todo.pop().next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                todo.append(child)
    return seen
