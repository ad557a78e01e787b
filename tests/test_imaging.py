"""Decoding radiographs of every format and mode to 8-bit grayscale, and the reasons bad files are rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from mtcxr.data.imaging import BadImage, decode_png, encode_png, image_size, load_grayscale, resize_short_side, to_gray8


def ramp(width: int, height: int) -> np.ndarray:
    """Dark on the left, bright on the right: orientation and contrast survive every path."""
    return np.tile(np.linspace(0, 255, width, dtype=np.float32), (height, 1))


def write(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, **options)
    return path


def gray(width: int = 60, height: int = 40) -> Image.Image:
    return Image.fromarray(ramp(width, height).astype(np.uint8), mode="L")


def assert_ramp(image: Image.Image, short_side: int):
    assert image.mode == "L"
    assert min(image.size) == short_side
    pixels = np.asarray(image, dtype=np.float32)
    assert pixels[:, :3].mean() < 60 and pixels[:, -3:].mean() > 190, "left dark, right bright"


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("l.png", lambda: gray()),
        ("rgb.png", lambda: gray().convert("RGB")),
        ("rgb.jpg", lambda: gray().convert("RGB")),
        ("l.jpg", lambda: gray()),
        ("cmyk.jpg", lambda: gray().convert("CMYK")),
        ("p.png", lambda: gray().convert("P")),
        ("p.gif", lambda: gray().convert("P")),
        ("one.png", lambda: gray().point(lambda value: 255 if value > 127 else 0).convert("1")),
        ("la.png", lambda: gray().convert("LA")),
        ("rgba.png", lambda: gray().convert("RGBA")),
        ("i16.png", lambda: Image.fromarray((ramp(60, 40) * 12 + 500).astype(np.uint16))),
        ("i32.tif", lambda: Image.fromarray((ramp(60, 40) * 100 - 9000).astype(np.int32))),
        ("f.tif", lambda: Image.fromarray(ramp(60, 40) / 255)),
    ],
)
def test_every_mode_becomes_grayscale(tmp_path: Path, name, make):
    path = write(tmp_path / name, make())
    assert_ramp(load_grayscale(path, 20), 20)


def test_sixteen_bit_is_windowed_to_its_range(tmp_path: Path):
    pixels = (ramp(200, 100) * 8 + 1000).astype(np.uint16)  # 1000..3040 of 65535, as a 12-bit detector
    pixels[0, 0] = 65535  # one burned-in marker pixel must not squash the rest
    image = load_grayscale(write(tmp_path / "w.png", Image.fromarray(pixels)), 100)
    values = np.asarray(image)
    assert values.min() <= 3 and values.max() >= 252
    assert 100 < values.mean() < 155


def test_transparent_pixels_become_black(tmp_path: Path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20, :3] = 200  # left half: bright but transparent
    rgba[:, 20:, :3] = 100
    rgba[:, 20:, 3] = 255
    image = load_grayscale(write(tmp_path / "t.png", Image.fromarray(rgba, mode="RGBA")), 40)
    values = np.asarray(image)
    assert values[:, :18].max() == 0 and values[:, 22:].min() == 100
    palette = Image.fromarray(rgba[..., :3], mode="RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    transparent = palette.getpixel((0, 0))
    values = np.asarray(load_grayscale(write(tmp_path / "p.png", palette, transparency=transparent), 40))
    assert values[:, :18].max() == 0 and values[:, 22:].min() == 100


def test_jpeg_draft_decodes_near_full_quality(tmp_path: Path):
    rng = np.random.default_rng(0)
    pixels = np.clip(ramp(2000, 1600) + rng.normal(0, 4, (1600, 2000)), 0, 255).astype(np.uint8)
    path = write(tmp_path / "big.jpg", Image.fromarray(pixels, mode="L"), quality=95)
    draft = load_grayscale(path, 128)
    with Image.open(path) as image:
        image.load()
        full = resize_short_side(to_gray8(image), 128)
    assert draft.size == full.size == (160, 128)
    assert np.abs(np.asarray(draft, np.float32) - np.asarray(full, np.float32)).mean() < 2.0


def test_small_images_are_upscaled(tmp_path: Path):
    assert load_grayscale(write(tmp_path / "small.png", gray(30, 15)), 64).size == (128, 64)


def test_exif_orientation_is_applied(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90-degree clockwise turn
    path = write(tmp_path / "phone.jpg", gray(60, 40).transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    image = load_grayscale(path, 20)
    assert image.size == (30, 20)
    assert image_size(path) == (60, 40)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: None, "missing file"),
        (lambda path: path.mkdir(), "not a regular file"),
        (lambda path: path.write_bytes(b""), "empty file (0 bytes)"),
        (lambda path: path.write_text("this is a report, not an image"), "not a readable image (unknown format)"),
    ],
)
def test_bad_files_say_why(tmp_path: Path, make, reason):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(BadImage) as caught:
        load_grayscale(path, 32)
    assert caught.value.reason == reason
    assert image_size(path) is None


@pytest.mark.parametrize("name", ["cut.jpg", "cut.png"])
def test_truncated_files_are_rejected(tmp_path: Path, name):
    rng = np.random.default_rng(1)
    whole = write(
        tmp_path / f"whole{Path(name).suffix}",
        Image.fromarray(rng.integers(0, 255, (300, 300), dtype=np.uint8), mode="L"),
    )
    path = tmp_path / name
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(BadImage, match="truncated or corrupt image"):
        load_grayscale(path, 32)


def test_oversized_images_are_rejected_before_decoding(tmp_path: Path):
    path = write(tmp_path / "huge.png", gray(40, 50))
    with pytest.raises(BadImage) as caught:
        load_grayscale(path, 32, max_pixels=1000)
    assert caught.value.reason == "oversized: 40x50 exceeds the pixel limit of 1000"
    assert load_grayscale(path, 32, max_pixels=2000).size == (32, 40)


def test_png_round_trip():
    image = gray(33, 17)
    assert np.array_equal(np.asarray(decode_png(encode_png(image))), np.asarray(image))


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ((2, 20_000), "extreme aspect ratio: 2x20000 (longer/shorter side 10000.0 > images.max_aspect_ratio 5)"),
        ((1_000_000, 1), "extreme aspect ratio: 1000000x1 (longer/shorter side 1000000.0 > images.max_aspect_ratio 5)"),
        ((41, 8), "extreme aspect ratio: 41x8 (longer/shorter side 5.12 > images.max_aspect_ratio 5)"),
    ],
)
def test_extreme_aspect_ratios_are_rejected_before_decoding(tmp_path: Path, monkeypatch, size, reason):
    path = write(tmp_path / "strip.png", Image.new("L", size, 128))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded despite the header check"))
    with pytest.raises(BadImage) as caught:
        load_grayscale(path, 256, max_pixels=60_000_000, max_aspect_ratio=5)
    assert caught.value.reason == reason


def test_aspect_ratio_at_the_limit_is_kept(tmp_path: Path):
    path = write(tmp_path / "five.png", gray(40, 8))
    assert load_grayscale(path, 64, max_aspect_ratio=5).size == (320, 64)
    assert load_grayscale(path, 64, max_aspect_ratio=5.0).size == (320, 64)
    assert load_grayscale(path, 64).size == (320, 64)  # no limit given: none applied (as for `mtcxr search`)
