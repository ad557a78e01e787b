"""Stage `build_memory`: X-TRA's non-parametric memory of the train split, per backbone and head variant.

The memory is what a query retrieves from: the train split's image and report embeddings,
projected through the variant's heads (the class-informed alignment of `xtra`), in FAISS
inner-product indexes (cosine on L2-normalised vectors), with the ids, patients and labels
of every entry. A folder holds:

- `images.faiss`, `images.parquet`: one entry per train image (image_id, study_id,
  patient_id, projected vector), in index order;
- `reports.faiss`, `reports.parquet`: one entry per train study's report (study_id,
  patient_id, projected vector), in index order;
- `labels.parquet`: the labels of every memory study (the labels contract);
- `memory.json`: backbone, variant, spec, dim, index kind and settings, entry counts and,
  for an approximate index, its recall@k against exact search on a sample of queries.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from mtcxr.data.embedded_split import load_projected, patients_of_studies, read_projected_info
from mtcxr.embedding_io import write_embeddings
from mtcxr.errors import InputError
from mtcxr.tables import CHEXPERT_DISPLAY, CHEXPERT_LABELS, read_table, write_table
from mtcxr.xtra import ann

log = logging.getLogger(__name__)

INDEX_SETTINGS = ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search")


@dataclass(frozen=True)
class MemorySettings:
    """What decides a memory: the FAISS index (`index:`), X-TRA's k, the views kept and the seed."""

    index: dict
    k: int
    frontal_only: bool
    seed: int


def build_memory(projected_dir: str, labels_path: str, output_dir: str, settings: MemorySettings) -> dict:
    """Index the train split of a projected folder with FAISS and write the memory; return memory.json."""
    info = read_projected_info(projected_dir)
    backbone_name, variant = info["backbone"], info["variant"]
    frontal_only, index_cfg, k, seed = settings.frontal_only, settings.index, settings.k, settings.seed
    train = load_projected(projected_dir, "train", frontal_only)
    if len(train.image_ids) == 0 or len(train.study_ids) == 0:
        raise InputError(
            f"the train split has {len(train.image_ids)} usable image(s) and {len(train.study_ids)} "
            "report(s): X-TRA's memory would be empty. Check the split and dataset.views."
        )
    images, reports = train.image_vectors, train.text_vectors
    patient_of_study = patients_of_studies(projected_dir)
    image_studies = train.study_ids[train.image_study]

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"backbone": backbone_name, "variant": variant, "spec": info.get("spec"), "normalized": True}
    write_embeddings(
        out / "images.parquet",
        "image_id",
        list(train.image_ids),
        images,
        metadata,
        {"study_id": list(image_studies), "patient_id": [patient_of_study[s] for s in image_studies]},
    )
    write_embeddings(
        out / "reports.parquet",
        "study_id",
        list(train.study_ids),
        reports,
        metadata,
        {"patient_id": [patient_of_study[s] for s in train.study_ids]},
    )
    labels = read_table(labels_path, "labels").filter(pl.col("study_id").is_in(list(train.study_ids)))
    write_table(labels.sort("study_id"), "labels", out / "labels.parquet")
    _warn_absent_labels(labels)

    settings = {key: index_cfg[key] for key in INDEX_SETTINGS}
    recall = {}
    rng = np.random.default_rng(seed)
    for name, vectors in (("images", images), ("reports", reports)):
        index = ann.make_index(vectors, index_cfg["kind"], seed=seed, **settings)
        faiss.write_index(index, str(out / f"{name}.faiss"))
        if index_cfg["kind"] != "flat":
            sample = images[
                np.sort(rng.choice(len(images), min(index_cfg["recall_sample"], len(images)), replace=False))
            ]
            recall[name] = round(ann.measure_recall(index, vectors, sample, min(k, len(vectors))), 4)
            log.info(
                "%s memory, %s index: recall@%d %.4f against exact search on %d queries",
                name,
                index_cfg["kind"],
                min(k, len(vectors)),
                recall[name],
                len(sample),
            )
    info = {
        **metadata,
        "dim": int(images.shape[1]),
        "split": "train",
        "frontal_only": frontal_only,
        "index": {"kind": index_cfg["kind"], **settings},
        "images": len(images),
        "reports": len(reports),
        "patients": len(set(patient_of_study[s] for s in train.study_ids)),
        "recall_at_k": recall or None,
        "k": k,
    }
    (out / "memory.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info(
        "%s/%s memory: %d images and %d reports of %d train patients (%s index)",
        backbone_name,
        variant,
        len(images),
        len(reports),
        info["patients"],
        index_cfg["kind"],
    )
    return info


def _warn_absent_labels(labels: pl.DataFrame) -> None:
    """Log the observations no memory study is positive for: no neighbour can carry them."""
    absent = [CHEXPERT_DISPLAY[name] for name in CHEXPERT_LABELS if not (labels[name] == 1).any()]
    if absent:
        log.warning(
            "no train study is positive for %s: X-TRA's neighbours cannot carry them, and the classifier "
            "learns them from no example",
            ", ".join(absent),
        )
