"""Image loading: every file mode to RGB uint8, EXIF orientation, unreadable files."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from panoptic_detr.data.image_io import find_images, load_image, to_rgb_array
from panoptic_detr.errors import PanopticDetrError


def write_png16_rgb(path, arr16: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), written by hand."""
    h, w, _ = arr16.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + arr16[y].astype(">u2").tobytes() for y in range(h))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def make_image_folder(root):
    """Good images in every mode (and one EXIF-rotated JPEG), returning {name: expected HxW}."""
    root.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:12, :16] = (255, 0, 0)
    rgb[12:, 16:] = (0, 0, 255)
    Image.fromarray(rgb).save(root / "rgb.png")
    Image.fromarray(rgb[:, :, 1] + 100).save(root / "gray.png")
    rgba = np.dstack([rgb, np.full((24, 32), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=4).save(root / "palette.png")
    gray16 = (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80).astype(np.uint16)
    Image.fromarray(gray16).save(root / "gray16.png")
    sub = root / "sub"
    sub.mkdir(exist_ok=True)
    write_png16_rgb(sub / "rgb16.png", rgb.astype(np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(sub / "rotated.jpg", exif=exif, quality=95)
    return {
        "rgb.png": (24, 32),
        "gray.png": (24, 32),
        "rgba.png": (24, 32),
        "palette.png": (24, 32),
        "gray16.png": (24, 32),
        "rgb16.png": (24, 32),
        "rotated.jpg": (32, 24),
    }


def test_all_modes_load_as_rgb_uint8(tmp_path):
    expected = make_image_folder(tmp_path)
    for path in sorted(tmp_path.rglob("*.*")):
        arr = load_image(path)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, path
        assert arr.shape[:2] == expected[path.name], path
        assert arr.flags["C_CONTIGUOUS"]


def test_conversions_keep_the_content(tmp_path):
    make_image_folder(tmp_path)
    rgb = load_image(tmp_path / "rgb.png")
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[-1, -1]) == (0, 0, 255)
    gray = load_image(tmp_path / "gray.png")
    assert (gray[..., 0] == gray[..., 1]).all() and gray[0, 0, 0] == 100
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgb)  # alpha dropped
    np.testing.assert_array_equal(load_image(tmp_path / "palette.png"), rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "sub" / "rgb16.png"), rgb)
    g16 = load_image(tmp_path / "gray16.png")
    src = (np.arange(24 * 32).reshape(24, 32) * 80).astype(np.uint16)
    np.testing.assert_array_equal(g16[..., 0], np.rint(src / 257.0).astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    make_image_folder(tmp_path)
    arr = load_image(tmp_path / "sub" / "rotated.jpg")
    assert arr.shape == (32, 24, 3)
    # stored: red top-left, blue bottom-right; rotated 90 degrees clockwise:
    # red top-right, blue bottom-left
    assert arr[4, -4, 0] > 200 and arr[4, -4, 2] < 60
    assert arr[-4, 4, 2] > 200 and arr[-4, 4, 0] < 60


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20],
    ids=["empty", "text", "truncated-png"],
)
def test_unreadable_file_names_the_file(tmp_path, content):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    with pytest.raises(PanopticDetrError, match="bad.jpg"):
        load_image(bad)


def test_truncated_jpeg_is_an_error(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(PanopticDetrError, match="cut.jpg"):
        load_image(cut)


def test_missing_file(tmp_path):
    with pytest.raises(PanopticDetrError, match="nope.png"):
        load_image(tmp_path / "nope.png")


def test_in_memory_arrays_and_modes():
    assert to_rgb_array(np.full((3, 4), 7, np.uint8)).shape == (3, 4, 3)
    assert to_rgb_array(np.zeros((3, 4, 1), np.uint8)).shape == (3, 4, 3)
    assert to_rgb_array(np.zeros((3, 4, 4), np.uint8)).shape == (3, 4, 3)
    assert to_rgb_array(np.full((2, 2), 65535, np.uint16))[0, 0, 0] == 255
    assert to_rgb_array(np.full((2, 2, 3), 1.0, np.float32))[0, 0, 0] == 255
    assert to_rgb_array(np.full((2, 2, 3), 0.5, np.float64))[0, 0, 0] == 128
    assert to_rgb_array(Image.new("1", (4, 3), 1))[0, 0, 0] == 255
    assert to_rgb_array(Image.new("CMYK", (4, 3), (0, 0, 0, 0)))[0, 0].tolist() == [255, 255, 255]
    assert to_rgb_array(Image.new("I", (4, 3), 200))[0, 0, 0] == 200
    assert to_rgb_array(Image.new("I", (4, 3), 65535))[0, 0, 0] == 255
    assert to_rgb_array(Image.new("F", (4, 3), 0.5))[0, 0, 0] == 128
    assert to_rgb_array(Image.new("LA", (4, 3), (9, 0)))[0, 0].tolist() == [9, 9, 9]
    with pytest.raises(ValueError):
        to_rgb_array(np.zeros((3, 4, 2), np.uint8))


def test_find_images(tmp_path):
    make_image_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "notes.txt").write_text("x")
    paths, problems = find_images([tmp_path / "imgs"])
    assert sorted(p.name for p in paths) == sorted(
        ["rgb.png", "gray.png", "rgba.png", "palette.png", "gray16.png", "rgb16.png", "rotated.jpg"]
    )
    assert problems == []
    paths, problems = find_images([str(tmp_path / "imgs" / "*.png"), tmp_path / "imgs" / "rgb.png", tmp_path / "missing.png"])
    assert len(paths) == 5  # no duplicates; the subfolder is not matched by *.png
    assert len(problems) == 1 and "missing.png" in problems[0]
    paths, _ = find_images([str(tmp_path / "imgs" / "**" / "*.jpg")])
    assert [p.name for p in paths] == ["rotated.jpg"]
