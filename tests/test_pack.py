"""The BAPPS pack: bit-exact round trip, memory-mapped loading, atomic writing, clear errors."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import perceptual_fast.bapps.pack as pack_module
from perceptual_fast.bapps.pack import FORMAT_VERSION, load_bapps, load_pack, pack_folder
from perceptual_fast.bapps.reader import ImageFiles, read_bapps
from perceptual_fast.bapps.synthetic import make_bapps
from perceptual_fast.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_bapps(tmp_path_factory.mktemp("bapps") / "src", triplets=6, jnd=5, train=2, categories=("noise", "contrast"),
                      progress=False)


@pytest.fixture(scope="module")
def pack(folder, tmp_path_factory):
    return pack_folder(folder, tmp_path_factory.mktemp("pack") / "bapps.safetensors", splits=("all",), workers=2, progress=False)


def test_round_trip_is_bit_exact_against_the_folder(folder, pack):
    want, got = read_bapps(folder, splits=("all",)), load_pack(pack)
    assert set(got.parts) == set(want.parts) == {"2afc/train", "2afc/val", "jnd/val"}
    assert (got.size, got.synthetic, got.note) == (want.size, want.synthetic, want.note) == (64, True, want.note)
    for key, w in want.parts.items():
        g = got.parts[key]
        assert (g.task, g.split, g.categories, g.names) == (w.task, w.split, w.categories, w.names)
        assert g.images.keys() == w.images.keys()
        decoded = w.materialized()
        for d in w.images:
            assert g.images[d].dtype == torch.uint8 and torch.equal(g.images[d], decoded.images[d])
        assert torch.equal(g.target, w.target) and torch.equal(g.category, w.category)


def mapped_from(tensor, path):
    """Whether the tensor's memory lies in a mapping of the file ``path`` (Linux /proc/self/maps)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        lo, hi = (int(v, 16) for v in fields[0].split("-"))
        if fields[-1] == str(path) and lo <= tensor.data_ptr() < hi:
            return True
    return False


def test_load_is_a_memory_map_and_selects_splits(pack):
    data = load_bapps(pack, splits=("val",))
    assert set(data.parts) == {"2afc/val", "jnd/val"}
    if Path("/proc/self/maps").exists():
        assert mapped_from(data.parts["2afc/val"].images["p1"], pack.resolve())
        assert not mapped_from(torch.zeros(10**6), pack.resolve())
    with safe_open(str(pack), framework="pt") as f:
        meta = f.metadata()
    assert meta["format_version"] == FORMAT_VERSION and len(meta["content_hash"]) == 64
    assert json.loads(meta["parts"])["jnd/val"]["names"][:2] == ["000000", "000001"]
    with pytest.raises(ValueError, match="holds 64x64 images, not 32x32: drop --size or pack the folder again with --size 32"):
        load_bapps(pack, size=32)


def test_pack_writes_atomically_and_leaves_no_temp_file(folder, tmp_path, monkeypatch):
    out = tmp_path / "p.safetensors"
    out.write_bytes(b"old pack")

    decode, calls = ImageFiles.decode, []

    def fails_midway(self, i):  # the stream dies after part of the images was written
        calls.append(i)
        if len(calls) == 20:
            raise OSError("disk full")
        return decode(self, i)

    monkeypatch.setattr(ImageFiles, "decode", fails_midway)
    with pytest.raises(OSError, match="disk full"):
        pack_folder(folder, out, workers=1, progress=False)
    assert out.read_bytes() == b"old pack" and list(tmp_path.iterdir()) == [out]


def test_packing_streams_a_few_batches_not_the_data_set(folder, tmp_path, monkeypatch):
    """The writer decodes one image kind at a time, at most a few batches ahead of what it wrote."""
    monkeypatch.setattr("perceptual_fast.bapps.pack._IMAGE_BATCH", 2)
    decode, written, worst = ImageFiles.decode, [0], [0]

    def counted(self, i):
        worst[0] = max(worst[0], decoded[0] + 1 - written[0])
        decoded[0] += 1
        return decode(self, i)

    decoded = [0]
    real_chunks = pack_module._chunks

    def chunks(part, what, workers):
        for chunk in real_chunks(part, what, workers):
            yield chunk
            if what not in ("target", "category"):
                written[0] += chunk.shape[0]

    monkeypatch.setattr(ImageFiles, "decode", counted)
    monkeypatch.setattr(pack_module, "_chunks", chunks)
    out = pack_folder(folder, tmp_path / "small-batches.safetensors", splits=("all",), workers=2, progress=False)
    assert decoded[0] == written[0] == 3 * (6 + 2) * 2 + 2 * 5 * 2  # every image decoded exactly once
    assert worst[0] <= 2 * (2 + 1)  # the batch being written plus two ahead, batches of 2
    torch.testing.assert_close(load_pack(out).parts["2afc/val"].images["p1"],
                               read_bapps(folder).parts["2afc/val"].materialized().images["p1"], rtol=0, atol=0)


def test_truncated_corrupted_foreign_and_other_version_packs_fail_clearly(pack, tmp_path):
    raw = pack.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(ValueError, match="cannot read pack .*truncated or not a safetensors file.*perceptual-fast pack"):
        load_pack(truncated)
    corrupted = tmp_path / "corrupted.safetensors"
    flipped = bytearray(raw)
    flipped[-3000] ^= 0x01
    corrupted.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="is corrupted: its content does not match the recorded hash; re-create it"):
        load_pack(corrupted)
    assert load_pack(corrupted, verify=False).size == 64  # verification is what caught it
    with safe_open(str(pack), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    other = tmp_path / "other.safetensors"
    save_file(tensors, str(other), metadata={**meta, "format_version": "0"})
    with pytest.raises(ValueError, match="has format version '0'; this perceptual_fast reads version '1': re-create it"):
        load_pack(other)
    foreign = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(ValueError, match="not a perceptual_fast BAPPS pack"):
        load_pack(foreign)
    with pytest.raises(ValueError, match="no such pack"):
        load_pack(tmp_path / "missing.safetensors")


def test_pack_command_and_scoring_from_the_pack_equals_the_folder(folder, tmp_path, capsys):
    out = tmp_path / "b.safetensors"
    assert main(["pack", str(folder), "-o", str(out), "--quiet"]) == 0
    assert "wrote SYNTHETIC pack" in capsys.readouterr().out
    docs = []
    for data in (str(folder), str(out)):
        assert main(["bapps", data, "--weights", "random", "--distance", "spatial,meanpool", "--json", "--quiet"]) == 0
        docs.append(json.loads(capsys.readouterr().out)["parts"])
    assert docs[0] == docs[1]
    (folder / "2afc/val/noise/judge/000002.npy").rename(tmp_path / "moved.npy")
    try:
        assert main(["pack", str(folder), "-o", str(tmp_path / "c.safetensors"), "--quiet"]) == 2
        assert "000002: missing from judge/" in capsys.readouterr().err
        assert not (tmp_path / "c.safetensors").exists()
    finally:
        (tmp_path / "moved.npy").rename(folder / "2afc/val/noise/judge/000002.npy")
