"""Stage `project_embeddings`: every split's image and report embeddings through one variant's heads, once.

The index, X-TRA's memory and neighbours and report generation all work in a variant's projected
space; they read this folder (`mtcxr.data.embedded_split.load_projected`) instead of each loading the
heads, the seven tables and re-projecting (dinov2's `extract_features`, shared by its evaluations, is
the pattern). The folder holds `images.parquet` (image_id, study_id, patient_id, split, view, vector)
and `reports.parquet` (study_id, patient_id, split, report, abnormal, one positive flag per CheXpert
observation, vector), both with the rows `load_split` keeps, and `projected.json`: the backbone,
variant, seed and the head files, relative to the folder so that results can move.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr.data.embedded_split import PROJECTED_IMAGES, PROJECTED_INFO, PROJECTED_REPORTS, load_split
from mtcxr.embedding_io import write_embeddings
from mtcxr.models.heads import load_heads, project
from mtcxr.tables import CHEXPERT_LABELS, read_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddingInputs:
    """The backbone's cached embeddings and the tables that say which rows belong to which split."""

    image_embeddings: list[str]
    text_embeddings: str
    images: str
    studies: str
    labels: str


def project_embeddings(
    inputs: EmbeddingInputs, head_weights: str, head_config: str, output_dir: str, run: dict[str, object]
) -> dict:
    """Project every split through the heads; write the projected folder; return its `projected.json`.

    `run` names the job's backbone, variant and seed (written into the folder's metadata).
    """
    heads, _ = load_heads(head_weights, head_config)
    every = load_split(
        inputs.image_embeddings, inputs.text_embeddings, inputs.images, inputs.studies, inputs.labels, None, False
    )
    studies = read_table(inputs.studies, "studies").select("study_id", "patient_id", "split")
    study_info = {row[0]: row[1:] for row in studies.iter_rows()}
    image_split = dict(read_table(inputs.images, "images").select("image_id", "split").iter_rows())
    image_studies = every.study_ids[every.image_study]

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {**run, "spec": every.metadata.get("spec"), "normalized": True}
    write_embeddings(
        out / PROJECTED_IMAGES,
        "image_id",
        list(every.image_ids),
        project(heads.image, every.image_vectors),
        metadata,
        {
            "study_id": list(image_studies),
            "patient_id": [study_info[s][0] for s in image_studies],
            "split": [image_split[i] for i in every.image_ids],
            "view": list(every.image_views),
        },
    )
    flags = {name: every.positive_labels[:, j] for j, name in enumerate(CHEXPERT_LABELS)}
    write_embeddings(
        out / PROJECTED_REPORTS,
        "study_id",
        list(every.study_ids),
        project(heads.text, every.text_vectors),
        metadata,
        {
            "patient_id": [study_info[s][0] for s in every.study_ids],
            "split": [study_info[s][1] for s in every.study_ids],
            "report": list(every.reports),
            "abnormal": np.asarray(every.abnormal, dtype=bool),
            **flags,
        },
    )
    info = {
        **metadata,
        "dim": int(every.image_vectors.shape[1]),
        "head_weights": os.path.relpath(Path(head_weights).resolve(), out.resolve()),
        "head_config": os.path.relpath(Path(head_config).resolve(), out.resolve()),
        "images": len(every.image_ids),
        "reports": len(every.study_ids),
    }
    (out / PROJECTED_INFO).write_text(json.dumps(info, indent=2) + "\n")
    per_split = pl.Series([study_info[s][1] for s in every.study_ids]).value_counts(sort=True)
    log.info(
        "%s/%s seed %s: %d images and %d reports projected (%s)",
        run.get("backbone"),
        run.get("variant"),
        run.get("seed"),
        len(every.image_ids),
        len(every.study_ids),
        ", ".join(f"{split} {n}" for split, n in per_split.iter_rows()),
    )
    return info
