"""Decode one radiograph into 8-bit grayscale near a target size, or say why it cannot be.

Real collections arrive as JPEG or PNG in modes L, RGB, RGBA, P (with or without
transparency), CMYK, 1-bit and 16-bit, from 150 px to well over 4,000 px. Every path
ends in mode L with the shorter side at the cache size; every failure is a `BadImage`
whose `reason` goes into the rejects table.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
WINDOW_PERCENTILES = (0.5, 99.5)
WINDOW_SAMPLES = 1_000_000  # pixels the window is estimated from: enough for stable percentiles
REDUCING_GAP = 3.0  # integer box reduction first, then bicubic over the last 3x: fast and visually identical
EXIF_ORIENTATION = 0x0112


class BadImage(ValueError):
    """An item-level image fault; `reason` goes into the rejects table."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def load_grayscale(
    path: str | Path, short_side: int, *, max_pixels: int | None = None, max_aspect_ratio: float | None = None
) -> Image.Image:
    """Return the image at `path` as mode-L with its shorter side resized to `short_side`.

    JPEGs use PIL's draft mode, which lets the decoder skip DCT coefficients and
    decode at 1/2, 1/4 or 1/8 scale straight into grayscale: a 2,500 x 3,000 MIMIC
    image decodes at 1/8 scale when the target is 256 px. Other formats decode in
    full and are shrunk with an integer box reduction before the bicubic resize.
    An EXIF orientation tag is applied, so phone photos of films come out upright.

    Both limits are checked on the header, before any pixel is decoded (None: no limit).
    `max_pixels` bounds the decoded size and `max_aspect_ratio` (longer / shorter side)
    the cached one, which is `short_side` by at most `short_side * max_aspect_ratio`:
    a 1 x 1,000,000 strip would otherwise be resized to 256 x 256,000,000.
    """
    path = Path(path)
    if not path.exists():
        raise BadImage("missing file")
    if not path.is_file():
        raise BadImage("not a regular file")
    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            _check_header(image.size, max_pixels, max_aspect_ratio)
            if image.format == "JPEG":
                image.draft("L", _draft_size(image.size, short_side))
            image.load()
            gray = to_gray8(_upright(image))
    except BadImage:
        raise
    except Image.DecompressionBombError as error:
        raise BadImage(f"oversized: {error}") from error
    except UnidentifiedImageError as error:
        raise BadImage("not a readable image (unknown format)") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadImage(f"truncated or corrupt image ({error})") from error
    return resize_short_side(gray, short_side)


def image_size(path: str | Path) -> tuple[int, int] | None:
    """Return (width, height) from the file's header without decoding pixels, or None if unreadable.

    Used at ingest to fill the images table; unreadable files are left to
    preprocessing, which rejects them with the reason.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.format == "JPEG" and image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except Exception:  # noqa: BLE001 - any failure here means "size unknown", never a crash at ingest
        return None


def _check_header(size: tuple[int, int], max_pixels: int | None, max_aspect_ratio: float | None) -> None:
    """Raise `BadImage` if a (width, height) from the header exceeds either limit."""
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise BadImage(f"oversized: {width}x{height} exceeds the pixel limit of {max_pixels}")
    longer, shorter = max(width, height), min(width, height)
    # Compared without dividing, so a (malformed) zero side is rejected rather than a ZeroDivisionError.
    if max_aspect_ratio is not None and longer > max_aspect_ratio * shorter:
        ratio = round(longer / shorter, 2) if shorter else float("inf")
        raise BadImage(
            f"extreme aspect ratio: {width}x{height} (longer/shorter side {ratio} > images.max_aspect_ratio {max_aspect_ratio:g})"
        )


def _draft_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    width, height = size
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _upright(image: Image.Image) -> Image.Image:
    # getexif() is cheap (the header is already parsed); transposing copies, so only when needed.
    if image.getexif().get(EXIF_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image


def to_gray8(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit grayscale.

    16-bit and float images are windowed to their own 0.5-99.5 percentile range
    (estimated on at most a million pixels), which spreads a 12-bit detector range
    over 0-255 and clips the few extreme pixels of burned-in text or collimator edges.
    Transparent regions are composited onto black: they carry no anatomy.
    """
    if image.mode in HIGH_BIT_MODES:
        return _window_to_gray8(np.asarray(image))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    if image.mode == "L":
        return image
    if image.mode in ("RGB", "1", "P", "CMYK", "YCbCr", "RGBX"):
        return image.convert("L")
    return image.convert("RGB").convert("L")


def _window_to_gray8(pixels: np.ndarray) -> Image.Image:
    pixels = np.nan_to_num(pixels.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    step = max(1, int(np.sqrt(pixels.size / WINDOW_SAMPLES)))
    low, high = np.percentile(pixels[::step, ::step], WINDOW_PERCENTILES)
    if high <= low:
        high = low + 1.0
    scaled = np.clip((pixels - low) * (255.0 / (high - low)), 0.0, 255.0)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def resize_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """Resize so the shorter side is `short_side` (bicubic), keeping the aspect ratio."""
    width, height = image.size
    scale = short_side / min(width, height)
    if abs(scale - 1.0) < 1e-9:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP if scale < 1 else None)


def encode_png(image: Image.Image) -> bytes:
    """Encode an image losslessly as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> Image.Image:
    """Decode PNG bytes written by `encode_png`."""
    return Image.open(io.BytesIO(data)).convert("L")
