"""Images per second per core decoding MIMIC-like JPEGs to 256 px: draft mode against full decoding.

Writes a few dozen MIMIC-CXR-JPG-like files to a temporary folder (baseline
grayscale JPEG, quality 95, about 2,500 x 3,000, a smooth radiograph-like
background with fine noise so the entropy coder has as much to do as on real
films: about 1.5 MB each), then decodes each to a shorter side of 256 px on one
thread with:

- `draft`: `mtcxr.data.imaging.load_grayscale`, the default path (PIL draft mode: the
  JPEG decoder scales by 1/8 in the DCT domain and skips chroma);
- `full`: PIL decoding every pixel, then the same resize;
- `simplejpeg` (only if importable): libjpeg-turbo's scaled decoding through
  simplejpeg, then the same resize, to see whether a leaner binding beats PIL.

Usage: .venv/bin/python benchmarks/decode_jpeg.py [--images 24] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, features

from mtcxr.data.imaging import load_grayscale, resize_short_side, to_gray8

SHORT_SIDE = 256


def radiograph_like(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth chest-like intensity field with film-grain noise, as uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y /= height
    x /= width
    body = np.exp(-(((x - 0.5) / 0.45) ** 6 + ((y - 0.5) / 0.55) ** 6))
    lungs = sum(np.exp(-(((x - cx) / 0.16) ** 2 + ((y - 0.45) / 0.3) ** 2)) for cx in (0.32, 0.68))
    ribs = 0.06 * np.sin(2 * np.pi * (y * 14 + 0.3 * np.abs(x - 0.5)))
    field = 40 + 170 * body - 90 * lungs * body + 30 * ribs * body
    field += rng.normal(0, 2.0, size=field.shape).astype(np.float32)
    return np.clip(field, 0, 255).astype(np.uint8)


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        width, height = int(rng.integers(2400, 2600)), int(rng.integers(2900, 3100))
        path = folder / f"cxr-{i:03d}.jpg"
        Image.fromarray(radiograph_like(rng, width, height), mode="L").save(path, quality=95)
        paths.append(path)
    return paths


def full_decode(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return resize_short_side(to_gray8(image), SHORT_SIDE)


def simplejpeg_decode(path: Path) -> Image.Image:
    import simplejpeg

    data = path.read_bytes()
    width, height, _, _ = simplejpeg.decode_jpeg_header(data)
    scale = SHORT_SIDE / min(width, height)
    pixels = simplejpeg.decode_jpeg(
        data, colorspace="GRAY", min_width=round(width * scale), min_height=round(height * scale)
    )
    return resize_short_side(Image.fromarray(pixels[:, :, 0], mode="L"), SHORT_SIDE)


def rate(decode, paths: list[Path], rounds: int) -> float:
    """Images per second on this thread, best of `rounds` passes."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for path in paths:
            decode(path)
        best = min(best, time.perf_counter() - start)
    return len(paths) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    methods = {"draft (default)": lambda path: load_grayscale(path, SHORT_SIDE), "full": full_decode}
    try:
        import simplejpeg  # noqa: F401

        methods["simplejpeg"] = simplejpeg_decode
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as scratch:
        paths = write_images(Path(scratch), args.images)
        mean_mb = np.mean([os.path.getsize(path) for path in paths]) / 1e6
        with Image.open(paths[0]) as first:
            print(f"{len(paths)} JPEGs, e.g. {first.size[0]}x{first.size[1]} {first.mode}, {mean_mb:.2f} MB on average")
        for path in paths:  # warm the page cache
            path.read_bytes()
        rates = {name: rate(decode, paths, args.rounds) for name, decode in methods.items()}
    turbo = features.version("libjpeg_turbo") or "none"
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Pillow {Image.__version__}, libjpeg-turbo {turbo}"
    for name, value in rates.items():
        print(f"{name:>16}: {value:6.1f} images/s per core  ({value / rates['full']:.2f}x full)")
    print(
        f"| JPEG decode to {SHORT_SIDE} px, 1 core | draft {rates['draft (default)']:.0f}/s, full {rates['full']:.0f}/s"
        + (f", simplejpeg {rates['simplejpeg']:.0f}/s" if "simplejpeg" in rates else "")
        + f" | {machine} |"
    )


if __name__ == "__main__":
    main()
