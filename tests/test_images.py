"""Image reading (every mode and bit depth to uint8 RGB, alpha notes, errors), recursive folder pairing
and CSV/TSV pair lists. Every file is written by the test itself, a few pixels large."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from perceptual_fast.util.images import NOTE_8BIT, NOTE_ALPHA, format_notes, pair_paths, read_image, read_pair_list

# 16-bit values around the rounding boundaries of v * 255 / 65535 (= v / 257), plus the extremes.
EDGES = np.array([0, 1, 128, 129, 256, 257, 385, 386, 32767, 32768, 51528, 65406, 65407, 65534, 65535], dtype=np.uint16)


def expected8(v: np.ndarray) -> np.ndarray:
    """The conversion the reader must do: round(v * 255 / 65535) (not v >> 8, not min(v, 255))."""
    return np.round(v.astype(np.float64) * 255 / 65535).astype(np.uint8)


def values16(shape, seed=0) -> np.ndarray:
    """Random uint16 samples with the rounding edge cases first."""
    v = np.random.default_rng(seed).integers(0, 65536, int(np.prod(shape)), dtype=np.uint16)
    v[: len(EDGES)] = EDGES
    return v.reshape(shape)


def hwc(t) -> np.ndarray:
    """read_image's ``[3, H, W]`` tensor as an ``[H, W, 3]`` array."""
    assert t.dtype.is_floating_point is False and t.shape[0] == 3
    return t.permute(1, 2, 0).numpy()


def write_png16(path, arr: np.ndarray) -> None:
    """A 16-bit PNG (grey+alpha, RGB or RGBA by the last axis) with PIL's decoder still to do real work:
    rows cycle through all five filters (None, Sub, Up, Average, Paeth), which depend on the pixel size."""
    h, w, c = arr.shape
    colour_type = {2: 4, 3: 2, 4: 6}[c]
    raw = arr.astype(">u2").view(np.uint8).reshape(h, w * c * 2).astype(np.int32)
    bpp = 2 * c
    rows = []
    for y in range(h):
        cur = raw[y]
        up = raw[y - 1] if y else np.zeros_like(cur)
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        kind = y % 5
        if kind == 4:
            p = left + up - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        else:
            pred = [np.zeros_like(cur), left, up, (left + up) // 2][kind]
        rows.append(bytes([kind]) + ((cur - pred) % 256).astype(np.uint8).tobytes())

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def write_tiff16(path, arr: np.ndarray, little: bool, deflate: bool) -> None:
    """A one-strip 16-bit RGB TIFF. PIL decodes the plain one itself (rawmode ``RGB;16L`` or ``RGB;16B``)
    and a deflated one through libtiff (rawmode ``RGB;16N``): the three byte-order cases."""
    h, w, _ = arr.shape
    e = "<" if little else ">"
    data = arr.astype(e + "u2").tobytes()
    data = zlib.compress(data) if deflate else data
    tags = [(256, w), (257, h), (258, None), (259, 8 if deflate else 1), (262, 2), (273, None), (277, 3), (278, h), (279, len(data))]
    ifd = 8
    bps = ifd + 2 + 12 * len(tags) + 4
    out = (b"II" if little else b"MM") + struct.pack(e + "HI", 42, ifd) + struct.pack(e + "H", len(tags))
    for tag, value in tags:
        if tag == 258:
            out += struct.pack(e + "HHII", tag, 3, 3, bps)
        elif tag in (273, 279):
            out += struct.pack(e + "HHII", tag, 4, 1, bps + 6 if tag == 273 else value)
        else:
            out += struct.pack(e + "HHIHH", tag, 3, 1, value, 0)
    path.write_bytes(out + struct.pack(e + "I", 0) + struct.pack(e + "3H", 16, 16, 16) + data)


# ---- 16-bit and 32-bit data ----


def test_16bit_grey_png_is_rounded_not_clipped(tmp_path):
    """A real 'I;16' PNG: every value maps to round(v * 255 / 65535); PIL's convert("RGB") would clip to 255."""
    v = values16((6, 9))
    Image.fromarray(v).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode.startswith("I;16")  # the case under test
    notes = set()
    out = hwc(read_image(tmp_path / "g16.png", notes=notes))
    np.testing.assert_array_equal(out, np.repeat(expected8(v)[:, :, None], 3, axis=2))
    assert notes == set()


def test_16bit_big_endian_grey_tiff(tmp_path):
    """'I;16B' (a big-endian TIFF) decodes to the same rounding."""
    v = values16((3, 5), seed=1)
    Image.frombytes("I;16B", (5, 3), v.astype(">u2").tobytes()).save(tmp_path / "g16b.tif")
    with Image.open(tmp_path / "g16b.tif") as img:
        assert img.mode == "I;16B"
    np.testing.assert_array_equal(hwc(read_image(tmp_path / "g16b.tif"))[:, :, 0], expected8(v))


@pytest.mark.parametrize("channels", [3, 4, 2], ids=["rgb48", "rgba64", "la32"])
def test_16bit_colour_png_keeps_all_16_bits(tmp_path, channels):
    """PIL opens 16-bit RGB(A)/LA PNGs as 8-bit, truncating to the high bytes; the reader recovers the
    low bytes and rounds, through every PNG filter. Alpha is dropped with a note."""
    v = values16((10, 7, channels), seed=channels)
    write_png16(tmp_path / "c16.png", v)
    notes = set()
    out = hwc(read_image(tmp_path / "c16.png", notes=notes))
    colour = v[:, :, :3] if channels >= 3 else np.repeat(v[:, :, :1], 3, axis=2)
    np.testing.assert_array_equal(out, expected8(colour))
    assert notes == ({(NOTE_ALPHA, str(tmp_path / "c16.png"))} if channels != 3 else set())


@pytest.mark.parametrize("little,deflate", [(True, False), (False, False), (True, True)], ids=["le", "be", "libtiff"])
def test_16bit_rgb_tiff_keeps_all_16_bits(tmp_path, little, deflate):
    """16-bit RGB TIFFs in both byte orders, and through libtiff (native order): full precision too."""
    v = values16((4, 6, 3), seed=7)
    write_tiff16(tmp_path / "c16.tif", v, little, deflate)
    notes = set()
    np.testing.assert_array_equal(hwc(read_image(tmp_path / "c16.tif", notes=notes)), expected8(v))
    assert notes == set()


def test_16bit_resize_happens_after_conversion(tmp_path):
    """size resizes the converted 8-bit image (the same as resizing the expected 8-bit rendition)."""
    v = values16((8, 8, 3), seed=3)
    write_png16(tmp_path / "c16.png", v)
    want = np.asarray(Image.fromarray(expected8(v)).resize((5, 5), Image.BILINEAR))
    np.testing.assert_array_equal(hwc(read_image(tmp_path / "c16.png", size=5)), want)


def test_32bit_int_and_float_conventions(tmp_path):
    """'I' within [0, 65535] is 16-bit; beyond, [0, 2**31 - 1] with negatives clipped; 'F' is [0, 1] clipped,
    NaN 0. Each departure is noted."""
    small = np.array([[0, 257, 65535, 32896]], dtype=np.int32)
    Image.fromarray(small).save(tmp_path / "i16.tif")
    notes = set()
    np.testing.assert_array_equal(hwc(read_image(tmp_path / "i16.tif", notes=notes))[0, :, 0], [0, 1, 255, 128])
    assert notes == set()

    big = np.array([[-5, 0, 2**31 - 1, 2**30]], dtype=np.int32)
    Image.fromarray(big).save(tmp_path / "i32.tif")
    np.testing.assert_array_equal(hwc(read_image(tmp_path / "i32.tif", notes=notes))[0, :, 0], [0, 0, 255, 128])
    assert {n for n, _ in notes} == {"negative integer values clipped to 0", "32-bit integer values scaled from [0, 2147483647]"}
    Image.fromarray(np.array([[65536, 65535]], dtype=np.int32)).save(tmp_path / "i17.tif")  # just past 16 bits
    np.testing.assert_array_equal(hwc(read_image(tmp_path / "i17.tif"))[0, :, 0], [0, 0])

    notes = set()
    Image.fromarray(np.array([[0.0, 0.5, 1.0, 1.5, -1.0, np.nan]], dtype=np.float32)).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(hwc(read_image(tmp_path / "f.tif", notes=notes))[0, :, 0], [0, 128, 255, 255, 0, 0])
    assert {n for n, _ in notes} == {"float values outside [0, 1] clipped"}


# ---- 8-bit modes and alpha ----


def test_palette_with_transparency(tmp_path):
    """A palette PNG with per-entry transparency: the palette colours, alpha dropped and noted, no PIL warning."""
    idx = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    img = Image.frombytes("P", (3, 2), idx.tobytes())
    palette = [200, 10, 20, 30, 220, 40, 5, 6, 250]
    img.putpalette(palette + [0] * (768 - len(palette)))
    img.save(tmp_path / "p.png", transparency=bytes([0, 128, 255]))
    with Image.open(tmp_path / "p.png") as check:
        assert check.mode == "P" and "transparency" in check.info
    notes = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = hwc(read_image(tmp_path / "p.png", notes=notes))
    np.testing.assert_array_equal(out, np.array(palette, dtype=np.uint8).reshape(3, 3)[idx])
    assert notes == {(NOTE_ALPHA, str(tmp_path / "p.png"))}


def test_rgba_alpha_dropped_not_composited(tmp_path):
    """RGBA: the colour channels as stored (even under alpha 0), and a note."""
    rgba = np.random.default_rng(0).integers(0, 256, (4, 5, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    notes = set()
    np.testing.assert_array_equal(hwc(read_image(tmp_path / "rgba.png", notes=notes)), rgba[:, :, :3])
    assert notes == {(NOTE_ALPHA, str(tmp_path / "rgba.png"))}


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_grey_and_grey_alpha(tmp_path, mode):
    """L and LA: the grey value in all three channels; only LA gets the alpha note."""
    grey = np.random.default_rng(1).integers(0, 256, (3, 4), dtype=np.uint8)
    Image.fromarray(grey).convert(mode).save(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as check:
        assert check.mode == mode
    notes = set()
    np.testing.assert_array_equal(hwc(read_image(tmp_path / "g.png", notes=notes)), np.repeat(grey[:, :, None], 3, axis=2))
    assert notes == ({(NOTE_ALPHA, str(tmp_path / "g.png"))} if mode == "LA" else set())


def test_cmyk_jpeg(tmp_path):
    """A CMYK JPEG (pure cyan / magenta / yellow / black quadrants) comes out as RGB colours."""
    cmyk = np.zeros((16, 16, 4), dtype=np.uint8)
    cmyk[:8, :8, 0] = cmyk[:8, 8:, 1] = cmyk[8:, :8, 2] = cmyk[8:, 8:, 3] = 255
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as check:
        assert check.mode == "CMYK"
    out = hwc(read_image(tmp_path / "cmyk.jpg")).astype(int)
    for (y, x), rgb in {(3, 3): (0, 255, 255), (3, 12): (255, 0, 255), (12, 3): (255, 255, 0), (12, 12): (0, 0, 0)}.items():
        assert np.abs(out[y, x] - rgb).max() <= 8, (y, x, out[y, x])


def test_unreadable_file_is_a_value_error_naming_it(tmp_path):
    """Not an image, and a missing file: ValueError with the path and PIL's reason."""
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read image .*bad\.png.*cannot identify"):
        read_image(bad)
    truncated = tmp_path / "cut.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "whole.png")
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    with pytest.raises(ValueError, match=r"cut\.png"):
        read_image(truncated)
    with pytest.raises(ValueError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")


def test_format_notes_counts_images():
    """One line per kind of note with the number of images, singular for one."""
    notes = {(NOTE_ALPHA, "a.png"), (NOTE_ALPHA, "b.png"), (NOTE_8BIT, "c.tif")}
    assert format_notes(notes) == [f"note: {NOTE_8BIT} in 1 image", f"note: {NOTE_ALPHA} in 2 images"]


# ---- folder pairing ----


def _tree(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_pair_paths_recursive(tmp_path):
    """recursive pairs by relative path into subfolders; without it, only the top level (unchanged)."""
    a, b = tmp_path / "a", tmp_path / "b"
    names = ["x.png", "sub/x.png", "sub/deeper/y.JPG", "sub/notes.txt"]
    _tree(a, names)
    _tree(b, names)
    pairs = pair_paths(a, b, recursive=True)
    assert [n for n, _, _ in pairs] == ["sub/deeper/y.JPG", "sub/x.png", "x.png"]
    assert pairs[1] == ("sub/x.png", a / "sub" / "x.png", b / "sub" / "x.png")
    assert pair_paths(a, b) == [("x.png", a / "x.png", b / "x.png")]


def test_pair_paths_recursive_unmatched(tmp_path):
    """A relative path present on one side only is an error naming it; an empty tree too."""
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(a, ["sub/x.png", "sub/z.png"])
    _tree(b, ["sub/x.png", "other/z.png"])
    with pytest.raises(ValueError, match=r"unmatched: other/z\.png, sub/z\.png"):
        pair_paths(a, b, recursive=True)
    (tmp_path / "e1" / "s").mkdir(parents=True)
    (tmp_path / "e2").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        pair_paths(tmp_path / "e1", tmp_path / "e2", recursive=True)


# ---- pair lists ----


def test_pair_list_csv_with_header_relative_and_absolute(tmp_path):
    """A CSV with a header row, comments, blank lines, quoted commas, relative and absolute paths."""
    _tree(tmp_path, ["ref/1.png", "dist/1.png", "ref/2.png"])
    elsewhere = tmp_path.parent / f"{tmp_path.name}_other.png"
    listing = tmp_path / "pairs.csv"
    listing.write_text(
        "ref,dist,name\n"
        "# a comment\n"
        "\n"
        "ref/1.png, dist/1.png\n"
        f"{tmp_path / 'ref/2.png'},{elsewhere},second\n"
        '"odd, name.png",dist/1.png\n'
    )
    assert read_pair_list(listing) == [
        ("ref/1.png", tmp_path / "ref/1.png", tmp_path / "dist/1.png"),
        ("second", tmp_path / "ref/2.png", elsewhere),
        ("odd, name.png", tmp_path / "odd, name.png", tmp_path / "dist/1.png"),
    ]


def test_pair_list_tsv_without_header(tmp_path):
    """A TSV with no header: the first row is data, also when its files are missing or named like columns
    but exist; a tab-separated .txt is sniffed as TSV."""
    _tree(tmp_path, ["a", "b"])
    for name in ("pairs.tsv", "pairs.txt"):
        (tmp_path / name).write_text("a\tb\nx y.png\tz.png\tnamed\n")
        assert read_pair_list(tmp_path / name) == [
            ("a", tmp_path / "a", tmp_path / "b"),
            ("named", tmp_path / "x y.png", tmp_path / "z.png"),
        ]
    (tmp_path / "missing.tsv").write_text("img/1.png\tdist/1.png\n")
    assert [n for n, _, _ in read_pair_list(tmp_path / "missing.tsv")] == ["img/1.png"]


def test_pair_list_malformed_rows_name_the_line(tmp_path):
    """Too few / too many fields and empty paths are errors naming the list and its line number."""
    listing = tmp_path / "bad.csv"
    for body, line, what in [
        ("x.png,y.png\n# c\nlonely.png\n", 3, "got 1 field"),
        ("x.png,y.png,n,extra\n", 1, "got 4 fields"),
        ("\nx.png,y.png\n,y.png\n", 3, "empty a path"),
    ]:
        listing.write_text(body)
        with pytest.raises(ValueError, match=rf"bad\.csv'?, line {line}: .*{what}"):
            read_pair_list(listing)
    listing.write_text("# only comments\n\n")
    with pytest.raises(ValueError, match="holds no pairs"):
        read_pair_list(listing)


def test_pair_list_duplicate_names_made_unique(tmp_path):
    """Shared names get ' | b', then ' (line N)'; unique ones stay as they are; trailing empty name = default."""
    listing = tmp_path / "dups.csv"
    listing.write_text("x.png,b1.png\nx.png,b2.png,\ny.png,b.png\ny.png,b.png\nz.png,q.png,same\nw.png,r.png,same\n")
    assert [n for n, _, _ in read_pair_list(listing)] == [
        "x.png | b1.png",
        "x.png | b2.png",
        "y.png | b.png (line 3)",
        "y.png | b.png (line 4)",
        "same | q.png",
        "same | r.png",
    ]
    listing.write_text("x.png,b.png\nx.png,b.png\nq.png,r.png,x.png | b.png (line 2)\n")
    with pytest.raises(ValueError, match=r"line 3: name .* is also line 2's"):
        read_pair_list(listing)


def test_16bit_colour_fallback_when_the_second_decode_fails(tmp_path, monkeypatch):
    """If PIL cannot re-run the decode for the low bytes, PIL's high bytes are used and a note says so;
    a broken 16-bit file still fails as unreadable."""
    import perceptual_fast.util.images as images

    def refuse(path, rawmode):
        raise OSError("no such unpacker")

    v = values16((5, 6, 3), seed=5)
    write_png16(tmp_path / "c16.png", v)
    monkeypatch.setattr(images, "_decode_with_rawmode", refuse)
    notes = set()
    np.testing.assert_array_equal(hwc(read_image(tmp_path / "c16.png", notes=notes)), (v >> 8).astype(np.uint8))
    assert notes == {(NOTE_8BIT, str(tmp_path / "c16.png"))}
    (tmp_path / "cut.png").write_bytes((tmp_path / "c16.png").read_bytes()[:-40])
    notes = set()
    with pytest.raises(ValueError, match=r"cut\.png"):
        read_image(tmp_path / "cut.png", notes=notes)
    assert notes == set()
