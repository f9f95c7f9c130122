"""Exported trunks (torch.export .pt2, TorchScript .pt) and config-carrying weight files: what the Scorer loads
without the Python class."""

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

import perceptual_fast as pf
from perceptual_fast.cli import main
from perceptual_fast.trunks import CheckpointError, ExportedTrunk, load_trunk, read_checkpoint, save_trunk

# (trunk, config, distances): the Scorer's view of every family, with small widths/depths.
CASES = [
    ("alexnet", {}, ("lpips", "spatial")),
    ("dists_vgg16", {}, ("dists", "spatial")),
    ("resnet18", {"width": 0.25}, ("spatial", "meanpool", "style")),
    ("vit_s_8", {"depth": 2, "taps": "patch"}, ("spatial", "meanpool", "style")),
    ("vit_t_16", {"depth": 2}, ("spatial", "meanpool")),
]


@pytest.fixture
def triplets(photos, distorted):
    ref = photos(["astronaut", "coffee", "chelsea"], (64, 64), seed=1)
    return {"ref": ref, "p0": distorted(ref, "noise", 0.1), "p1": distorted(ref, "blur", 1.0),
            "judge": torch.tensor([0.2, 0.5, 0.9])}


def _export(name, config, archive, capsys):
    args = ["export", "--trunk", name, "--weights", "random", "--seed", "3", "-o", str(archive)]
    args += [a for k, v in config.items() for a in ("--config", f"{k}={json.dumps(v) if not isinstance(v, str) else v}")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        assert main(args) == 0
    assert f"wrote {archive}: trunk {name}" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".pt2", ".pt"], ids=["torch.export", "torchscript"])
@pytest.mark.parametrize("name,config,distances", CASES, ids=[c[0] for c in CASES])
def test_exported_archive_scores_like_the_eager_trunk(name, config, distances, suffix, triplets, tmp_path, capsys):
    archive = tmp_path / f"trunk{suffix}"
    _export(name, config, archive, capsys)
    lin = "lpips" if "lpips" in distances else "dists" if "dists" in distances else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        exported = pf.Scorer(archive, lin=lin, distances=distances)
    eager = pf.Scorer(name, weights="random", seed=3, trunk_config=config, lin=lin, distances=distances)
    kind = ExportedTrunk if suffix == ".pt2" else torch.jit.ScriptModule
    assert isinstance(exported.trunk, kind) and not isinstance(eager.trunk, (ExportedTrunk, torch.jit.ScriptModule))
    assert exported.trunk_name == eager.trunk_name == name
    assert exported.min_size == eager.min_size and list(exported.trunk.tap_channels) == eager.trunk.tap_channels
    got, want = exported.score(triplets), eager.score(triplets)
    for key in ("d0", "d1"):
        for d in distances:
            torch.testing.assert_close(got[key][d], want[key][d], rtol=1e-5, atol=1e-7)
    assert got["2afc_mean"] == want["2afc_mean"]


@pytest.mark.parametrize("name,config,distances", CASES[:4], ids=[c[0] for c in CASES[:4]])
def test_pt2_program_takes_any_batch_and_image_size(name, config, distances, tmp_path, capsys):
    """One traced program for every batch (1 included) and size (odd, non-square, the ViT's native grid),
    float32 and float64, channels_last, with the taps of the eager trunk; gradients reach the input."""
    archive = tmp_path / "trunk.pt2"
    _export(name, config, archive, capsys)
    exported, eager = load_trunk(archive), load_trunk(name, weights="random", seed=3, head=False, **config)
    multiple, low = eager.input_multiple, eager.min_input_size()
    sides = [(low, low), (64, 64), (97, 70), (low, 3 * low)]
    if name.startswith("vit"):
        native = eager.grid * multiple  # the position grid as trained: its resampling must be the identity
        sides = [(native, native), (64, 40), (8 * multiple, 3 * multiple)]
    for batch, (h, w) in zip((1, 3, 2, 1), sides):
        h, w = h // multiple * multiple, w // multiple * multiple
        x = torch.randn(batch, 3, h, w)
        with torch.no_grad():
            for got, want in zip(exported.forward_taps(x), eager.forward_taps(x)):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        got = exported.to(torch.float64, memory_format=torch.channels_last).forward_taps(
            x.contiguous(memory_format=torch.channels_last))
        want = eager.double().forward_taps(x)
    for g, w in zip(got, want):
        assert g.dtype == torch.float64
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    x.requires_grad_(True)
    sum(t.sum() for t in exported.forward_taps(x)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert exported.train().training and not exported.eval().training  # a traced program keeps eval behaviour


def test_pt2_archive_errors_and_weights(tmp_path, capsys):
    archive = tmp_path / "vit.pt2"
    _export("vit_t_16", {"depth": 1}, archive, capsys)
    vit = load_trunk(archive)
    with pytest.raises(ValueError, match=r"input 64x72 is not a multiple of 16: resize or crop"):
        vit.forward_taps(torch.randn(1, 3, 64, 72))
    with pytest.raises(ValueError, match=r"input 32x8 is smaller than its minimum side 16"):
        vit.forward_taps(torch.randn(1, 3, 32, 8))
    # its weights load into the named trunk (a .pt2 is a weights file too), config from the archive
    named = load_trunk("vit_t_16", weights=archive, head=False)
    assert named.trunk_config == vit.trunk_config
    x = torch.randn(1, 3, 48, 32)
    with torch.no_grad():
        torch.testing.assert_close(named.forward_taps(x)[0], vit.forward_taps(x)[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"is a torch.export archive: its config is fixed, it takes no \['depth'\]"):
        load_trunk(archive, depth=2)
    data = archive.read_bytes()
    (tmp_path / "cut.pt2").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cannot read .*cut\.pt2.*\(is it truncated or corrupt"):
        load_trunk(tmp_path / "cut.pt2")
    # a torch.export archive that is not a trunk
    plain = torch.export.export(torch.nn.Conv2d(3, 4, 3), (torch.randn(1, 3, 8, 8),))
    torch.export.save(plain, str(tmp_path / "conv.pt2"))
    with pytest.raises(CheckpointError, match=r"carries no 'perceptual_fast.taps'.* it is not a trunk \(write one with"):
        load_trunk(tmp_path / "conv.pt2")
    assert main(["export", "--trunk", "alexnet", "--weights", "random", "--with-head", "-o", str(tmp_path / "a.pt2")]) == 2
    assert "a .pt2 archive holds the taps only; --with-head needs a TorchScript archive" in capsys.readouterr().err


def test_save_trunk_carries_the_config(tmp_path):
    trunk = load_trunk("resnet50", weights="random", seed=5, width=0.25, skip_connections=False)
    path = tmp_path / "r50.safetensors"
    save_trunk(trunk, path)
    state, config = read_checkpoint(path)
    assert config == {"name": "resnet50", "family": "resnet", "depth": 50, "width": 0.25, "skip_connections": False,
                      "num_classes": 1000}
    x = torch.randn(2, 3, 64, 64)
    for loaded in (load_trunk(path), load_trunk("resnet50", weights=path)):  # the file alone is enough
        assert loaded.trunk_config == trunk.trunk_config
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), trunk(x), rtol=0, atol=0)
    assert pf.Scorer(path).trunk.tap_channels == [64, 128, 256, 512]
    # the same JSON under the perceptual_fast.trunk key of a torch checkpoint
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "perceptual_fast.trunk": json.dumps(config)},
               tmp_path / "r50.pth")
    assert load_trunk(tmp_path / "r50.pth", head=False).trunk_config == trunk.trunk_config
    with pytest.raises(CheckpointError, match=r"is for trunk 'resnet50' \(its config\), not 'resnet18': load it with load_trunk"):
        load_trunk("resnet18", weights=path)
    with pytest.raises(ValueError, match="save_trunk writes .safetensors files"):
        save_trunk(trunk, tmp_path / "r50.pt")


def test_bad_files_fail_with_clear_messages(tmp_path):
    r18 = load_trunk("resnet18", weights="random", width=0.125)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(r18), str(tmp_path / "r18.pt"))
    save_trunk(r18, tmp_path / "r18.safetensors")
    for good in ("r18.pt", "r18.safetensors"):  # truncated archive and truncated safetensors
        data = (tmp_path / good).read_bytes()
        (tmp_path / f"cut-{good}").write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=r"cannot read .*cut-r18.*\(is it truncated or corrupt"):
            load_trunk(tmp_path / f"cut-{good}")
    # wrong architecture: plain resnet18 weights (no config) into a resnet34 of the same width
    torch.save(r18.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"does not fit trunk 'resnet34' \(is it for another architecture\?\):\s+96 missing: layer1\.2\.conv1\.weight, .*\(84 more\)$"):
        load_trunk("resnet34", weights=tmp_path / "r18.pth", width=0.125)
    # extra keys: a file with one entry too many
    state = dict(r18.state_dict(), **{"fc2.weight": torch.zeros(3)})
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"does not fit trunk 'resnet18'.*:\s+1 unexpected: fc2\.weight$"):
        load_trunk("resnet18", weights=tmp_path / "extra.safetensors", width=0.125)
    with pytest.raises(CheckpointError, match=r"carries no trunk config \(metadata key 'perceptual_fast\.trunk'\): name the trunk"):
        load_trunk(tmp_path / "extra.safetensors")
    with pytest.raises(ValueError, match=r"unknown trunk 'resnet19'; available: .*resnet18.*vit_b_8.*\(or the path of an exported"):
        load_trunk("resnet19", weights="random")
    with pytest.raises(ValueError, match=r"is a file: it holds its own weights, so pass no weights="):
        load_trunk(tmp_path / "r18.pt", weights="random")


def test_export_cli_rejects_a_malformed_config(tmp_path, capsys):
    assert main(["export", "--trunk", "resnet6", "--weights", "random", "--config", "width", "-o", str(tmp_path / "a.pt")]) == 2
    assert "--config 'width' is not KEY=VALUE (e.g. --config width=0.25)" in capsys.readouterr().err


def test_compile_option_wraps_forward_taps(triplets):
    plain = pf.Scorer("resnet6", weights="random", trunk_config={"width": 0.0625}, distances=("spatial", "style"))
    compiled = pf.Scorer("resnet6", weights="random", trunk_config={"width": 0.0625}, distances=("spatial", "style"),
                         compile="eager")
    assert plain._compiled_taps is None and compiled._compiled_taps is not None
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    got, want = compiled.distance(triplets["ref"], triplets["p0"]), plain.distance(triplets["ref"], triplets["p0"])
    assert torch._dynamo.utils.counters["frames"]["ok"] >= 1  # dynamo traced the trunk
    for d in want:
        torch.testing.assert_close(got[d], want[d], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["squeezenet1_1", "resnet6"])
def test_programs_hold_torchs_ops_only(name, tmp_path):
    """Exported under no_grad on the CPU, where eager inference would fuse ReLUs into oneDNN
    convolutions and pool without indices (perceptual_fast/ops), the program still holds portable
    aten ops only: tracing rules those kernels out."""
    from perceptual_fast.trunks.exported import export_trunk

    program = export_trunk(load_trunk(name, weights="random", head=False), tmp_path / "t.pt2")
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not [t for t in targets if "mkldnn" in t or not t.startswith(("aten.", "<built-in"))], targets
    assert any("conv2d" in t for t in targets) and any("max_pool2d" in t for t in targets)
