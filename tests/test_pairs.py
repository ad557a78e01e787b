"""`mtcxr.data.embedded_split.load_split`: what joins cached embeddings with the tables, and what it leaves out."""

from __future__ import annotations

import numpy as np
import polars as pl

from mtcxr.data.embedded_split import load_split
from mtcxr.embedding_io import write_embeddings
from mtcxr.tables import CHEXPERT_LABELS, write_table


def test_load_split_aligns_images_reports_and_labels(tmp_path):
    studies = ["s1", "s0", "s2", "s3"]  # s2 has no report embedding, s3 no labels
    write_table(
        pl.DataFrame(
            {
                "study_id": studies,
                "patient_id": ["p1", "p0", "p2", "p3"],
                "split": ["test"] * 4,
                "findings": None,
                "impression": None,
                "report": ["one", "zero", "two", "three"],
                "dataset": "t",
            }
        ),
        "studies",
        tmp_path / "studies.parquet",
    )
    images = ["i3", "i0", "i1", "i2", "i4"]
    write_table(
        pl.DataFrame(
            {
                "image_id": images,
                "study_id": ["s1", "s0", "s0", "s2", "s3"],
                "patient_id": ["p1", "p0", "p0", "p2", "p3"],
                "split": ["test"] * 5,
                "view": ["PA", "AP", "LATERAL", "PA", "PA"],
                "path": [f"{i}.png" for i in images],
                "width": 64,
                "height": 64,
            }
        ),
        "images",
        tmp_path / "images.parquet",
    )
    labels = pl.DataFrame(
        {
            "study_id": ["s0", "s1", "s2"],
            **{name: [None, None, None] for name in CHEXPERT_LABELS},
            "abnormal": [False, True, True],
            "source": "dataset",
        }
    ).with_columns(cardiomegaly=pl.Series([None, 1, -1], dtype=pl.Int8))
    write_table(labels, "labels", tmp_path / "labels.parquet")
    vectors = np.eye(6, dtype=np.float32)
    write_embeddings(tmp_path / "images-0.parquet", "image_id", images, vectors[:5], {"spec": "demo"})
    write_embeddings(tmp_path / "texts.parquet", "study_id", ["s0", "s1", "s3"], vectors[[0, 1, 3]], {"spec": "demo"})
    paths = [
        [tmp_path / "images-0.parquet"],
        tmp_path / "texts.parquet",
        tmp_path / "images.parquet",
        tmp_path / "studies.parquet",
        tmp_path / "labels.parquet",
        "test",
    ]

    split = load_split(*paths, frontal_only=True)
    assert split.study_ids.tolist() == ["s0", "s1"]  # sorted; s2 lacks a report vector, s3 labels
    assert split.reports == ["zero", "one"]
    assert split.image_ids.tolist() == ["i0", "i3"]  # by image_id; the lateral i1 and s2's i2 are out
    assert split.image_study.tolist() == [0, 1] and split.image_views.tolist() == ["AP", "PA"]
    np.testing.assert_array_equal(split.image_vectors, vectors[[1, 0]])  # rows of i0 and i3 in the file
    np.testing.assert_array_equal(split.text_vectors, vectors[[0, 1]])
    assert split.abnormal.tolist() == [False, True]
    cardiomegaly = CHEXPERT_LABELS.index("cardiomegaly")
    assert split.positive_labels[:, cardiomegaly].tolist() == [False, True]  # only 1 is positive

    every_view = load_split(*paths, frontal_only=False)
    assert every_view.image_ids.tolist() == ["i0", "i1", "i3"] and every_view.image_views.tolist() == [
        "AP",
        "LATERAL",
        "PA",
    ]
