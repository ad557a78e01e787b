"""Stage `preprocess_images`: decode one shard of the images table into cached grayscale PNGs.

Shard `i` of `n` holds every image whose row number is i mod n, so shards are balanced and a
shard's content depends only on the images table. Bad items go to the shard's rejects table.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from mtcxr.data.imaging import BadImage, encode_png, image_size, load_grayscale
from mtcxr.tables import pixels_schema, read_table, write_table

log = logging.getLogger(__name__)

PIXELS_SCHEMA = pixels_schema()
WRITE_EVERY = 512  # rows per record batch: bounds memory whatever the shard size


class BadItemError(RuntimeError):
    """Raised on the first bad item when `on_bad_item: fail`."""


def shard_rows(images: pl.DataFrame, shard: int, n_shards: int) -> pl.DataFrame:
    """The rows of the images table that belong to `shard` (row number mod `n_shards`)."""
    return images.with_row_index("_row").filter(pl.col("_row") % n_shards == shard).drop("_row")


def preprocess_shard(
    images_path: str | Path,
    output_pixels: str | Path,
    output_rejects: str | Path,
    shard: int,
    n_shards: int,
    *,
    cache_size: int,
    max_pixels: int,
    max_aspect_ratio: float,
    on_bad_item: str,
    threads: int = 1,
) -> tuple[int, int]:
    """Decode shard `shard` of `n_shards`; write pixels and rejects; return (written, rejected).

    The limits have no defaults here: the config schema is their one home (`images.*`, `on_bad_item`).
    """
    rows = shard_rows(read_table(images_path, "images"), shard, n_shards)

    def decode(row: dict) -> tuple[dict, tuple[int, int, bytes] | None, str | None]:
        # Encoding here too runs it on the pool and keeps any MemoryError an item-level fault.
        try:
            image = load_grayscale(row["path"], cache_size, max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio)
            return row, (image.width, image.height, encode_png(image)), None
        except BadImage as error:
            return row, None, error.reason
        except MemoryError:
            # One pathological file must not take the whole shard (and its other images) down with it.
            size = image_size(row["path"])
            return row, None, "out of memory decoding the image" + (f" ({size[0]}x{size[1]} px)" if size else "")

    rejects, written = [], 0
    Path(output_pixels).parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(output_pixels, PIXELS_SCHEMA) as writer, ThreadPoolExecutor(max(1, threads)) as pool:
        pending: list[dict] = []
        # PIL releases the GIL while decoding, so threads use the rule's cores without process overhead.
        results = pool.map(decode, rows.iter_rows(named=True))
        for row, cached, reason in tqdm(results, total=rows.height, desc=f"preprocess shard {shard}", unit="img"):
            if cached is None:
                if on_bad_item == "fail":
                    raise BadItemError(
                        f"image {row['image_id']} ({row['path']}): {reason}. Set on_bad_item: reject to skip such items."
                    )
                rejects.append(
                    {"item": row["image_id"], "path": row["path"], "stage": "preprocess_images", "reason": reason}
                )
                continue
            pending.append(
                {
                    "image_id": row["image_id"],
                    "study_id": row["study_id"],
                    "split": row["split"],
                    "view": row["view"],
                    "width": cached[0],
                    "height": cached[1],
                    "png": cached[2],
                }
            )
            if len(pending) >= WRITE_EVERY:
                writer.write_table(pa.Table.from_pylist(pending, schema=PIXELS_SCHEMA))
                written += len(pending)
                pending = []
        if pending:
            writer.write_table(pa.Table.from_pylist(pending, schema=PIXELS_SCHEMA))
            written += len(pending)
    write_table(
        pl.DataFrame(rejects, schema={k: pl.String for k in ("item", "path", "stage", "reason")}),
        "rejects",
        output_rejects,
    )
    log.info("shard %d/%d: %d images cached at %d px, %d rejected", shard, n_shards, written, cache_size, len(rejects))
    if rejects:
        log.warning("shard %d: %d image(s) rejected; see %s", shard, len(rejects), output_rejects)
    return written, len(rejects)
