"""Decode one radiograph into 8-bit grayscale near a target size, or say why it cannot be."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class BadImage(ValueError):
    """An item-level image fault; `reason` goes into the rejects table."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def load_grayscale(path: str | Path, short_side: int, max_pixels: int = 50_000_000) -> Image.Image:
    """Return the image at `path` as mode-L with its shorter side resized to `short_side`.

    JPEGs use PIL's draft mode, which lets the decoder skip DCT coefficients and
    decode at 1/2, 1/4 or 1/8 scale: a 2,500 x 3,000 MIMIC image decodes at
    roughly 1/8 of the work when the target is 256 px.
    """
    path = Path(path)
    if not path.is_file():
        raise BadImage("missing file")
    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise BadImage(f"{image.width}x{image.height} exceeds the pixel limit of {max_pixels}")
            if image.format == "JPEG":
                image.draft("L", _draft_size(image.size, short_side))
            image.load()
            gray = to_gray8(image)
    except BadImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise BadImage(f"not a readable image ({type(error).__name__})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"truncated or corrupt image ({error})") from error
    return resize_short_side(gray, short_side)


def _draft_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    width, height = size
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_gray8(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit grayscale; 16-bit images are windowed to their own range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        low, high = np.percentile(pixels, [0.5, 99.5])
        if high <= low:
            high = low + 1.0
        pixels = np.clip((pixels - low) / (high - low), 0.0, 1.0) * 255.0
        return Image.fromarray(pixels.round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite onto black: transparent regions carry no anatomy.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return image.convert("L")


def resize_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """Resize so the shorter side is `short_side` (bicubic), keeping the aspect ratio."""
    width, height = image.size
    scale = short_side / min(width, height)
    if abs(scale - 1.0) < 1e-9:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def encode_png(image: Image.Image) -> bytes:
    """Encode an image losslessly as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> Image.Image:
    """Decode PNG bytes written by `encode_png`."""
    return Image.open(io.BytesIO(data)).convert("L")
