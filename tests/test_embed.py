"""Image embedding: loader workers decode in parallel without changing the shard's order or values."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mtcxr.data.imaging import encode_png
from mtcxr.data.preprocess import PIXELS_SCHEMA
from mtcxr.embedding_io import read_embeddings
from mtcxr.models.biomedclip_shape import write_biomedclip_like
from mtcxr.models.embed import ShardImages, Spread, embed_image_shard


@pytest.fixture(scope="module")
def pixel_shard(tmp_path_factory) -> Path:
    """A shard of 23 images in row groups of uneven size, as preprocess_images writes them in chunks."""
    path = tmp_path_factory.mktemp("pixels") / "shard-0.parquet"
    rng = np.random.default_rng(0)
    rows = [
        {
            "image_id": f"img{i:02d}",
            "study_id": f"s{i}",
            "split": "test",
            "view": "PA",
            "width": 40,
            "height": 36,
            "png": encode_png(Image.fromarray(rng.integers(0, 256, (36, 40), dtype=np.uint8), "L")),
        }
        for i in range(23)
    ]
    with pq.ParquetWriter(path, PIXELS_SCHEMA) as writer:
        for start, stop in ((0, 9), (9, 11), (11, 23)):
            writer.write_table(pa.Table.from_pylist(rows[start:stop], schema=PIXELS_SCHEMA))
    return path


def test_batches_stay_within_row_groups(pixel_shard):
    batches = ShardImages(pixel_shard, preprocess=None, batch_size=4).batches()
    assert batches == [(0, 0), (0, 4), (0, 8), (1, 0), (2, 0), (2, 4), (2, 8)]


def test_order_and_values_do_not_depend_on_workers(pixel_shard, tmp_path):
    model = write_biomedclip_like(tmp_path / "biomedclip", size="tiny")
    results = {}
    for workers in (0, 2):
        output = tmp_path / f"images-{workers}.parquet"
        count = embed_image_shard(
            pixel_shard,
            output,
            "biomedclip",
            f"local-dir:{model}",
            batch_size=4,
            device="cpu",
            threads=1,
            workers=workers,
        )
        assert count == 23
        results[workers] = read_embeddings(output, "image_id")
    ids, vectors, meta = results[0]
    assert list(ids) == [f"img{i:02d}" for i in range(23)]  # the shard's order
    assert vectors.shape == (23, 48) and meta["spec"] == f"local-dir:{model}"
    assert list(results[2][0]) == list(ids)
    np.testing.assert_array_equal(results[2][1], vectors)


def test_spread_warns_when_a_backbone_collapses(caplog):
    rng = np.random.default_rng(1)
    collapsed = np.ones((40, 8)) + 1e-4 * rng.normal(size=(40, 8))
    spread_out = rng.normal(size=(40, 8))
    for name, vectors in (("collapsed", collapsed), ("spread", spread_out)):
        spread = Spread()
        for batch in np.array_split(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), 3):
            assert spread.add(batch.astype(np.float32)) is not None
        with caplog.at_level("WARNING"):
            cosine = spread.warn_if_collapsed("image", name)
        assert (cosine > 0.999) == (name == "collapsed") and spread.n == 40
    assert "image embeddings of collapsed have collapsed: mean pairwise cosine 1.0000 over 40" in caplog.text
    assert "of spread" not in caplog.text
