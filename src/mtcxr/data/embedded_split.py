"""Join cached embeddings with the studies, images and labels tables into aligned arrays for one split.

`load_split` reads the backbone's embeddings; `load_projected` reads a `project_embeddings` folder (the
same rows, every split, already through a variant's heads), so the stages after the heads never
re-project and never need the seven tables again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr.embedding_io import read_embeddings
from mtcxr.tables import CHEXPERT_LABELS, FRONTAL_VIEWS, read_table


@dataclass
class SplitEmbeddings:
    """Image vectors and their studies' report vectors for one split, row-aligned by index arrays."""

    image_ids: np.ndarray  # (I,) str
    image_vectors: np.ndarray  # (I, D) float32
    image_study: np.ndarray  # (I,) int64 index into study_ids
    study_ids: np.ndarray  # (S,) str
    reports: list[str]  # (S,)
    text_vectors: np.ndarray  # (S, D) float32
    abnormal: np.ndarray  # (S,) bool
    positive_labels: np.ndarray  # (S, 14) bool: label == 1
    metadata: dict
    image_views: np.ndarray | None = None  # (I,) str: PA, AP, LATERAL, ... (set by load_split)

    @property
    def image_abnormal(self) -> np.ndarray:
        return self.abnormal[self.image_study]


def load_split(
    image_embeddings: list[str | Path],
    text_embeddings: str | Path,
    images_path: str | Path,
    studies_path: str | Path,
    labels_path: str | Path,
    split: str | None,
    frontal_only: bool = True,
) -> SplitEmbeddings:
    """Load the embeddings of `split` (None: every split), keeping images whose study has a report embedding and labels."""
    images = read_table(images_path, "images")
    studies = read_table(studies_path, "studies")
    if split is not None:
        images = images.filter(pl.col("split") == split)
        studies = studies.filter(pl.col("split") == split)
    if frontal_only:
        images = images.filter(pl.col("view").is_in(FRONTAL_VIEWS))
    studies = studies.select("study_id", "report")
    labels = read_table(labels_path, "labels")
    studies = studies.join(labels, on="study_id", how="inner").sort("study_id")

    text_ids, text_vectors, metadata = read_embeddings(text_embeddings, "study_id")
    text_row = {study_id: row for row, study_id in enumerate(text_ids)}
    studies = studies.filter(pl.col("study_id").is_in(list(text_row)))
    study_ids = studies["study_id"].to_numpy().astype(object)
    study_index = {study_id: i for i, study_id in enumerate(study_ids)}

    image_ids, image_vectors, _ = read_embeddings(image_embeddings, "image_id")
    image_row = {image_id: row for row, image_id in enumerate(image_ids)}
    images = images.filter(pl.col("image_id").is_in(list(image_row)) & pl.col("study_id").is_in(list(study_index)))
    images = images.sort("image_id")
    kept_ids = images["image_id"].to_numpy().astype(object)
    return SplitEmbeddings(
        image_ids=kept_ids,
        image_vectors=image_vectors[[image_row[i] for i in kept_ids]] if len(kept_ids) else image_vectors[:0],
        image_study=np.array([study_index[s] for s in images["study_id"]], dtype=np.int64),
        image_views=images["view"].to_numpy().astype(object),
        study_ids=study_ids,
        reports=studies["report"].to_list(),
        text_vectors=text_vectors[[text_row[s] for s in study_ids]] if len(study_ids) else text_vectors[:0],
        abnormal=studies["abnormal"].to_numpy().astype(bool),
        positive_labels=np.stack([(studies[name].fill_null(0) == 1).to_numpy() for name in CHEXPERT_LABELS], axis=1),
        metadata=metadata,
    )


# Files of a `project_embeddings` folder (mtcxr.models.project): every split's images and reports.
PROJECTED_IMAGES = "images.parquet"
PROJECTED_REPORTS = "reports.parquet"
PROJECTED_INFO = "projected.json"


def load_projected(folder: str | Path, split: str, frontal_only: bool = True) -> SplitEmbeddings:
    """`split` of a projected folder: the rows `load_split` gives, with vectors already through the heads.

    The folder holds every split (a `split` column); the images kept are those of `split` (frontal
    only where asked) whose study is among the split's studies, in image_id order, as in `load_split`.
    """
    folder = Path(folder)
    ids, vectors, metadata = read_embeddings(folder / PROJECTED_REPORTS, "study_id")
    reports = pl.read_parquet(folder / PROJECTED_REPORTS, columns=["split", "report", "abnormal", *CHEXPERT_LABELS])
    rows = np.flatnonzero((reports["split"] == split).to_numpy())
    study_ids = ids[rows]
    study_index = {study_id: i for i, study_id in enumerate(study_ids)}
    kept = reports[rows]

    image_ids, image_vectors, _ = read_embeddings(folder / PROJECTED_IMAGES, "image_id")
    images = pl.read_parquet(folder / PROJECTED_IMAGES, columns=["study_id", "split", "view"])
    keep = (images["split"] == split) & images["study_id"].is_in(list(study_index))
    if frontal_only:
        keep &= images["view"].is_in(FRONTAL_VIEWS)
    image_rows = np.flatnonzero(keep.to_numpy())
    return SplitEmbeddings(
        image_ids=image_ids[image_rows],
        image_vectors=image_vectors[image_rows],
        image_study=np.array([study_index[s] for s in images["study_id"].gather(image_rows)], dtype=np.int64),
        image_views=images["view"].gather(image_rows).to_numpy().astype(object),
        study_ids=study_ids,
        reports=kept["report"].to_list(),
        text_vectors=vectors[rows],
        abnormal=kept["abnormal"].to_numpy().astype(bool),
        positive_labels=np.stack([kept[name].to_numpy().astype(bool) for name in CHEXPERT_LABELS], axis=1)
        if len(rows)
        else np.zeros((0, len(CHEXPERT_LABELS)), dtype=bool),
        metadata=metadata,
    )


def read_projected_info(folder: str | Path) -> dict:
    """A projected folder's `projected.json`, with the head files resolved against the folder."""
    folder = Path(folder)
    info = json.loads((folder / PROJECTED_INFO).read_text())
    for key in ("head_weights", "head_config"):
        info[key] = str((folder / info[key]).resolve())
    return info


def patients_of_studies(folder: str | Path) -> dict[str, str]:
    """study_id -> patient_id of every study of a projected folder."""
    reports = pl.read_parquet(Path(folder) / PROJECTED_REPORTS, columns=["study_id", "patient_id"])
    return dict(reports.iter_rows())
