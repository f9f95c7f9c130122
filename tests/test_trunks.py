"""LPIPS trunks: torchvision architecture and names, taps, strict loading from local files."""

import warnings

import pytest
import torch
from safetensors.torch import save_file

import perceptual_fast as pf
from perceptual_fast import _C
from perceptual_fast.ops.inference import torch_ops_only
from perceptual_fast.trunks import CheckpointError, load_trunk

TV_BUILDERS = {"alexnet": "alexnet", "vgg16": "vgg16", "squeezenet1_1": "squeezenet1_1"}
TV_FILES = {"alexnet": "alexnet-owt-7be5be79.pth", "vgg16": "vgg16-397923af.pth", "squeezenet1_1": "squeezenet1_1-b8a52dc0.pth"}
TAPS_64 = {
    "alexnet": [(64, 15, 15), (192, 7, 7), (384, 3, 3), (256, 3, 3), (256, 3, 3)],
    "vgg16": [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4)],
    "squeezenet1_1": [(64, 31, 31), (128, 15, 15), (256, 7, 7), (384, 3, 3), (384, 3, 3), (512, 3, 3), (512, 3, 3)],
    "dists_vgg16": [(3, 64, 64), (64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4)],
}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty torch hub cache in a temporary folder (TORCH_HOME)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize("name", list(TV_BUILDERS))
def test_torchvision_checkpoint_loads_strictly_and_gives_its_logits(name, hub_cache):
    # Only this test needs torchvision (the reference models); the package itself never imports it.
    torchvision = pytest.importorskip("torchvision", exc_type=ModuleNotFoundError)
    torch.manual_seed(0)
    reference = getattr(torchvision.models, TV_BUILDERS[name])(weights=None).eval()
    torch.save(reference.state_dict(), hub_cache / TV_FILES[name])
    ours = load_trunk(name, weights="torchvision")
    x = torch.randn(2, 3, 224, 224) if name != "vgg16" else torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
        # The taps are what LPIPS's slices of torchvision's `features` give.
        want, h = [], x
        for i, layer in enumerate(reference.features):
            h = layer(h)
            if i in ours.tap_after:
                want.append(h.clone())
        for got, expected in zip(ours.forward_taps(x), want):
            torch.testing.assert_close(got, expected)


def test_torchvision_weights_missing_from_cache_say_where(hub_cache):
    with pytest.raises(CheckpointError, match=r"alexnet-owt-7be5be79.pth is not in the torch hub cache .*nothing is downloaded"):
        load_trunk("alexnet", weights="torchvision")


def test_no_weights_says_how_to_give_them():
    with pytest.raises(ValueError, match=r"needs weights, and none are downloaded: pass weights='path/to/file'.*'torchvision'.*'random'"):
        pf.Scorer("alexnet")


@pytest.mark.parametrize("name", list(TAPS_64))
def test_tap_shapes_and_min_size(name):
    trunk = load_trunk(name, weights="random", head=False)
    assert trunk.tap_shapes(64, 64) == TAPS_64[name]
    with torch.no_grad():
        for h, w in [(64, 64), (75, 101), (trunk.min_input_size(), trunk.min_input_size())]:
            got = [tuple(t.shape[1:]) for t in trunk.forward_taps(torch.randn(1, 3, h, w))]
            assert got == trunk.tap_shapes(h, w)
            assert min(min(s[1:]) for s in got) >= 1
    side = trunk.min_input_size() - 1
    assert min(min(s[1:]) for s in trunk.tap_shapes(side, side)) < 1


def test_random_weights_are_seeded_and_head_free_features_match():
    a = load_trunk("vgg16", weights="random", seed=1, head=False)
    b = load_trunk("vgg16", weights="random", seed=1)
    c = load_trunk("vgg16", weights="random", seed=2, head=False)
    for (k, va), vb, vc in zip(a.features.state_dict().items(), b.features.state_dict().values(), c.features.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    with pytest.raises(RuntimeError, match="built with head=False"):
        a(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "nested-pth", "torchscript"])
def test_weight_formats_round_trip(fmt, tmp_path):
    src = load_trunk("squeezenet1_1", weights="random", seed=4)
    state = src.state_dict()
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "pth":
        torch.save(state, path)
    elif fmt == "nested-pth":  # a training checkpoint: DataParallel prefix, nested, with extras
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
            torch.jit.save(torch.jit.script(src), str(path))
    loaded = load_trunk("squeezenet1_1", weights=path)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_wrong_architecture_lists_missing_unexpected_and_misshaped(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(load_trunk("vgg16", weights="random", head=False).features.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"does not fit trunk 'alexnet' \(is it for another architecture\?\):[\s\S]*missing: features\.0\.weight[\s\S]*unexpected: 0\.weight"):
        load_trunk("alexnet", weights=path)
    alex = load_trunk("alexnet", weights="random").state_dict()
    alex["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    alex["extra.bias"] = torch.zeros(1)
    torch.save(alex, path)
    with pytest.raises(CheckpointError, match=r"1 unexpected: extra\.bias[\s\S]*1 mis-shaped: features\.3\.weight: file \(192, 64, 3, 3\) vs model \(192, 64, 5, 5\)"):
        load_trunk("alexnet", weights=path)


def test_truncated_and_corrupt_files_fail_clearly(tmp_path):
    state = load_trunk("alexnet", weights="random", head=False).features.state_dict()
    state = {f"features.{k}": v for k, v in state.items()}
    good_pth, good_st = tmp_path / "a.pth", tmp_path / "a.safetensors"
    torch.save(state, good_pth)
    save_file(state, str(good_st))
    for good in (good_pth, good_st):
        data = good.read_bytes()
        bad = tmp_path / ("cut-" + good.name)
        bad.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=r"cannot read .*(truncated or corrupt)"):
            load_trunk("alexnet", weights=bad, head=False)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"cannot read torch checkpoint .*junk\.pth"):
        load_trunk("alexnet", weights=junk)
    with pytest.raises(CheckpointError, match=r"does not exist \(nothing is downloaded"):
        load_trunk("alexnet", weights=tmp_path / "nope.pth")
    # Features-only file: fine for scoring (head=False), missing the classifier for a full model.
    load_trunk("alexnet", weights=good_pth, head=False)
    with pytest.raises(CheckpointError, match=r"6 missing: classifier\.1\.weight"):
        load_trunk("alexnet", weights=good_pth)


# Every family, small: (name, config). Scripted == eager; channels_last and bf16 autocast run and agree.
FAMILY_CASES = [
    ("alexnet", {}),
    ("squeezenet1_1", {}),
    ("vgg16", {}),
    ("dists_vgg16", {}),
    ("resnet6", {"width": 0.25}),
    ("resnet18", {"width": 0.25, "skip_connections": False}),
    ("resnet50", {"width": 0.125}),
    ("vit_s_8", {"depth": 2}),
    ("vit_t_4", {"depth": 2, "taps": "patch"}),
]


def _rel_rms(got, want):
    return float((got.float() - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt())


@pytest.mark.parametrize("name,config", FAMILY_CASES, ids=[c[0] + ("-" + c[1].get("taps", "") if "taps" in c[1] else "") for c in FAMILY_CASES])
def test_every_family_scripts_and_runs_channels_last_and_bf16(name, config):
    trunk = load_trunk(name, weights="random", head=False, **config)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eager = trunk.forward_taps(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
            scripted = torch.jit.script(trunk)
        for got, want in zip(scripted.forward_taps(x), eager, strict=True):
            assert float((got - want).abs().max()) <= 1e-5
        assert scripted.min_input_size() == trunk.min_input_size() and list(scripted.tap_channels) == trunk.tap_channels
        last = trunk.to(memory_format=torch.channels_last).forward_taps(x.to(memory_format=torch.channels_last))
        for got, want in zip(last, eager, strict=True):
            assert _rel_rms(got, want) < 1e-5
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = trunk.forward_taps(x)
        for i, (got, want) in enumerate(zip(low, eager, strict=True)):
            if i == 0 and name == "dists_vgg16":  # the image tap: one float32 affine map, not autocast
                assert torch.equal(got, want)
                continue
            # bf16 arithmetic did happen (not exact) and stays close; ViT taps come out float32, as
            # autocast keeps the residual stream in the dtype of the position embeddings.
            assert got.dtype in (torch.bfloat16, torch.float32) and 0 < _rel_rms(got, want) < 0.05


def test_list_trunks_names_every_family():
    names = pf.list_trunks()
    assert names[:3] == ["alexnet", "squeezenet1_1", "vgg16"]
    assert [n for n in names if n.startswith("resnet")] == [f"resnet{d}" for d in (6, 18, 34, 50, 101, 152, 200)]
    assert [n for n in names if n.startswith("vit")] == [f"vit_{s}_{p}" for s in "tsbl" for p in (4, 8, 16)]


CONVNETS = [c for c in FAMILY_CASES if not c[0].startswith("vit")]


def _count_kernel_calls(monkeypatch):
    """Counts the calls that reach the inference kernels: oneDNN's fused op and the compiled pool."""
    calls = {"conv2d_relu": 0, "max_pool2d": 0}

    def spy(op, real):
        def run(*args):
            calls[op] += 1
            return real(*args)
        return run

    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", spy("conv2d_relu", torch.ops.mkldnn._convolution_pointwise))
    monkeypatch.setattr(_C, "max_pool2d_cpu", spy("max_pool2d", _C.max_pool2d_cpu))
    return calls


@pytest.mark.parametrize("name,config", CONVNETS, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("layout,threads", [(torch.channels_last, 2), (torch.channels_last, 1), (torch.contiguous_format, 2)],
                         ids=["channels_last", "channels_last-1thread", "nchw"])
def test_inference_kernels_give_the_taps_of_torchs_ops(name, config, layout, threads, monkeypatch):
    """Eager inference runs conv2d_relu and max_pool2d (perceptual_fast/ops) on channels_last batches;
    the taps are those of torch's own ops bit for bit, on an odd size, at one thread and two; NCHW
    runs torch's ops; under autograd the kernels step aside."""
    calls = _count_kernel_calls(monkeypatch)
    trunk = load_trunk(name, weights="random", head=False, **config).to(memory_format=layout)
    x = torch.randn(3, 3, 67, 53).contiguous(memory_format=layout)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            got = trunk.forward_taps(x)
            ran = dict(calls)
            with torch_ops_only():
                want = trunk.forward_taps(x)
    finally:
        torch.set_num_threads(previous)
    assert calls == ran  # torch_ops_only ran none of them
    fast = layout == torch.channels_last
    pools = {"alexnet": 2, "squeezenet1_1": 3, "vgg16": 4, "dists_vgg16": 0}.get(name, 1)  # those before the last tap
    assert ran["max_pool2d"] == (pools if fast else 0)
    assert (ran["conv2d_relu"] > 0) == (fast and not name.startswith("resnet"))  # ResNets: conv, BN, then ReLU
    for g, w in zip(got, want, strict=True):
        assert g.is_contiguous(memory_format=layout) == w.is_contiguous(memory_format=layout)
        assert torch.equal(g, w)
    x.requires_grad_(True)
    sum(t.sum() for t in trunk.forward_taps(x)).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert calls == ran  # under autograd: torch's ops


@pytest.mark.parametrize("name", ["squeezenet1_1", "resnet6", "alexnet"])
def test_transforms_and_hooks_see_torchs_ops(name, monkeypatch):
    """jit.trace, fx and forward-mode AD record or differentiate torch's ops (a kernel call would be
    a constant in a traced graph, an unknown to fx, a lost tangent); hooks on the layers still fire."""
    calls = _count_kernel_calls(monkeypatch)
    trunk = load_trunk(name, weights="random", head=False).to(memory_format=torch.channels_last)
    x, other = (torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last) for _ in range(2))
    class Taps(torch.nn.Module):  # forward = forward_taps, what jit.trace and fx trace
        def __init__(self):
            super().__init__()
            self.trunk = trunk

        def forward(self, x):
            return self.trunk.forward_taps(x)

    with torch.no_grad():
        want = trunk.forward_taps(other)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings
            traced = torch.jit.trace(Taps(), x)
            graph = torch.fx.symbolic_trace(Taps())
        for program in (traced, graph):  # run on another input: nothing of x may be baked in
            assert all(torch.equal(g, w) for g, w in zip(program(other), want, strict=True))
    before = dict(calls)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, torch.ones_like(x))
        taps = trunk.forward_taps(dual)
        assert all(torch.autograd.forward_ad.unpack_dual(t).tangent is not None for t in taps)
    assert calls == before
    pool = next(m for m in trunk.modules() if isinstance(m, torch.nn.MaxPool2d))
    conv = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # squeezenet1_1: inside a Fire
    seen = []
    handles = [m.register_forward_hook(lambda *_a, m=m: seen.append(type(m).__name__)) for m in (pool, conv)]
    with torch.no_grad():
        hooked = trunk.forward_taps(other)
    for h in handles:
        h.remove()
    assert "MaxPool2d" in seen and "Conv2d" in seen
    assert all(torch.equal(g, w) for g, w in zip(hooked, want, strict=True))
