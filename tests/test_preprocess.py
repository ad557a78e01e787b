"""Stage `preprocess_images`: one shard's bad images become rejects with their reasons, the rest are cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from mtcxr.data import preprocess
from mtcxr.data.imaging import decode_png, load_grayscale
from mtcxr.data.preprocess import BadItemError, preprocess_shard
from mtcxr.tables import read_table, write_table

LIMITS = {"cache_size": 32, "max_pixels": 60_000_000, "max_aspect_ratio": 5}


def images_table(tmp_path: Path, images: dict[str, Image.Image]) -> Path:
    """Write each image as `<id>.png` (small files, whatever their size) and an images table listing them."""
    rows = []
    for image_id, image in images.items():
        image.save(tmp_path / f"{image_id}.png")
        rows.append(
            {
                "image_id": image_id,
                "study_id": f"s-{image_id}",
                "patient_id": "p",
                "split": "train",
                "view": "PA",
                "path": str(tmp_path / f"{image_id}.png"),
                "width": image.width,
                "height": image.height,
            }
        )
    write_table(pl.DataFrame(rows), "images", tmp_path / "images.parquet")
    return tmp_path / "images.parquet"


def normal() -> Image.Image:
    return Image.fromarray(np.tile(np.linspace(0, 255, 60, dtype=np.float32), (40, 1)).astype(np.uint8), mode="L")


def test_extreme_aspect_ratios_and_out_of_memory_are_rejected_per_image(tmp_path: Path, monkeypatch):
    table = images_table(
        tmp_path,
        {
            "a": normal(),
            "narrow": Image.new("L", (2, 20_000), 90),
            "strip": Image.new("L", (1, 1_000_000), 90),
            "bomb": normal(),
            "z": normal(),
        },
    )
    assert (tmp_path / "strip.png").stat().st_size < 4_000  # a 2-KB file that would resize to 32 x 32,000,000

    def exhausting(path, *args, **kwargs):
        if Path(path).stem == "bomb":
            raise MemoryError
        return load_grayscale(path, *args, **kwargs)

    monkeypatch.setattr(preprocess, "load_grayscale", exhausting)
    written, rejected = preprocess_shard(
        table,
        tmp_path / "pixels.parquet",
        tmp_path / "rejects.parquet",
        0,
        1,
        **LIMITS,
        on_bad_item="reject",
        threads=2,
    )
    assert (written, rejected) == (2, 3)
    rejects = read_table(tmp_path / "rejects.parquet", "rejects").sort("item")
    assert rejects.select("item", "reason").rows() == [
        ("bomb", "out of memory decoding the image (60x40 px)"),
        ("narrow", "extreme aspect ratio: 2x20000 (longer/shorter side 10000.0 > images.max_aspect_ratio 5)"),
        ("strip", "extreme aspect ratio: 1x1000000 (longer/shorter side 1000000.0 > images.max_aspect_ratio 5)"),
    ]
    assert set(rejects["stage"]) == {"preprocess_images"}
    pixels = pl.read_parquet(tmp_path / "pixels.parquet").sort("image_id")
    # The normal images are cached exactly as before: shorter side at cache_size, aspect ratio kept.
    assert pixels.select("image_id", "width", "height").rows() == [("a", 48, 32), ("z", 48, 32)]
    expected = np.asarray(load_grayscale(tmp_path / "a.png", 32))
    for png in pixels["png"]:
        assert np.array_equal(np.asarray(decode_png(png)), expected)


def test_fail_mode_stops_at_an_extreme_aspect_ratio(tmp_path: Path):
    table = images_table(tmp_path, {"a": normal(), "strip": Image.new("L", (1, 1_000_000), 90)})
    with pytest.raises(BadItemError, match=r"image strip .*extreme aspect ratio: 1x1000000"):
        preprocess_shard(
            table, tmp_path / "pixels.parquet", tmp_path / "rejects.parquet", 0, 1, **LIMITS, on_bad_item="fail"
        )
