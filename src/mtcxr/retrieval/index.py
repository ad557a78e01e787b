"""Stage `build_index`: FAISS exact inner-product indexes over the test gallery of a projected folder.

An index folder holds `images.faiss` + `images.parquet` (image_id, study_id, view, projected vector),
`texts.faiss` + `texts.parquet` (one row per distinct normalised report: text_id, the studies
sharing it, the text, projected vector), `studies.parquet` (every study's own report and projected
vector, for the published protocols' exact-text dedup), `prototypes.npy` (mean projected normal and abnormal
train reports) and `index.json` (backbone, variant, head files, backbone folder; paths relative to the
index folder: read it with `mtcxr.retrieval.index_info.read_index_info`). `mtcxr search` is in search.py.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from mtcxr.data.embedded_split import load_projected, read_projected_info
from mtcxr.data.text import dedupe_reports
from mtcxr.embedding_io import write_embeddings
from mtcxr.models.backbone import LOCAL_PREFIX
from mtcxr.retrieval.index_info import flat_ip_index, is_local

log = logging.getLogger(__name__)


def build_index(projected_dir: str, output_dir: str, demo_dir: str | None = None, frontal_only: bool = True) -> None:
    """Write FAISS indexes + id maps of the test gallery of a projected folder (`project_embeddings`)."""
    split = "test"
    info = read_projected_info(projected_dir)
    head_cfg = json.loads(Path(info["head_config"]).read_text())
    gallery, train = load_projected(projected_dir, split, frontal_only), load_projected(projected_dir, "train", True)
    backbone_name, variant = info["backbone"], info["variant"]
    images, texts = gallery.image_vectors, gallery.text_vectors
    first, of_study = dedupe_reports(gallery.reports)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = info.get("spec")
    metadata = {"backbone": backbone_name, "variant": variant, "spec": spec, "normalized": True}
    faiss.write_index(flat_ip_index(images), str(out / "images.faiss"))
    write_embeddings(
        out / "images.parquet",
        "image_id",
        list(gallery.image_ids),
        images,
        metadata,
        {"study_id": list(gallery.study_ids[gallery.image_study]), "view": list(gallery.image_views)},
    )
    faiss.write_index(flat_ip_index(texts[first]), str(out / "texts.faiss"))
    studies_of_text: list[list[str]] = [[] for _ in first]
    for study, text_id in zip(gallery.study_ids, of_study):
        studies_of_text[text_id].append(study)
    write_embeddings(
        out / "texts.parquet",
        "text_id",
        [f"t{i:07d}" for i in range(len(first))],
        texts[first],
        metadata,
        {"study_ids": [" ".join(s) for s in studies_of_text], "report": [gallery.reports[i] for i in first]},
    )
    pl.DataFrame({"study_id": list(gallery.study_ids), "text_row": of_study}).write_parquet(out / "study_texts.parquet")
    # Every study's own report and vector: the published protocols deduplicate by exact text instead.
    write_embeddings(
        out / "studies.parquet", "study_id", list(gallery.study_ids), texts, metadata, {"report": gallery.reports}
    )

    train_texts = train.text_vectors
    prototypes = np.stack([_mean_or_zero(train_texts[~train.abnormal]), _mean_or_zero(train_texts[train.abnormal])])
    np.save(out / "prototypes.npy", prototypes.astype(np.float32))
    (out / "index.json").write_text(
        json.dumps(
            {
                **metadata,
                "split": split,
                "frontal_only": frontal_only,
                "images": len(images),
                "texts": len(first),
                "head_weights": _relative(info["head_weights"], out),
                "head_config": _relative(info["head_config"], out),
                "demo_dir": _relative(demo_dir, out) if demo_dir else None,
                "backbone_dir": _relative(spec[len(LOCAL_PREFIX) :], out) if is_local(spec) else None,
                "trained": head_cfg.get("trained", False),
                "seed": head_cfg.get("seed") if head_cfg.get("trained", False) else None,
            },
            indent=2,
        )
        + "\n"
    )
    log.info(
        "%s/%s index: %d images, %d distinct reports (%d studies)",
        backbone_name,
        variant,
        len(images),
        len(first),
        len(of_study),
    )


def _mean_or_zero(vectors: np.ndarray) -> np.ndarray:
    if not len(vectors):
        return np.zeros(vectors.shape[1], dtype=np.float32)
    mean = vectors.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def _relative(path: str | Path, folder: Path) -> str:
    """`path` relative to `folder`, so the pair can move together."""
    return os.path.relpath(Path(path).resolve(), folder.resolve())
