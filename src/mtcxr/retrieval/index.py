"""Stage `build_index`: FAISS exact inner-product indexes over the test gallery (`mtcxr search` is in search.py).

An index folder holds `images.faiss` + `images.parquet` (image_id, study_id, view, projected vector),
`texts.faiss` + `texts.parquet` (one row per distinct normalised report: text_id, the studies
sharing it, the text, projected vector), `studies.parquet` (every study's own report and projected
vector, for the published protocols' exact-text dedup), `prototypes.npy` (mean projected normal and abnormal
train reports) and `index.json` (backbone, variant, head files). The file paths in `index.json` are
relative to the index folder, so a results folder still works after it is moved or copied; read them
with `read_index_info`. That includes the backbone's own folder: the demo backbone's (`demo_dir`) and
a `local-dir:` backbone's (`backbone_dir`, e.g. a fine-tuned backbone under `models/finetuned/`, whose
spec names it relative to the working directory of the run); `index_backbone_spec` gives the spec to load.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from mtcxr.data.embedded_split import load_split
from mtcxr.data.text import dedupe_reports
from mtcxr.embedding_io import write_embeddings
from mtcxr.models.backbone import LOCAL_PREFIX
from mtcxr.models.heads import load_heads, project

log = logging.getLogger(__name__)

# index.json entries that name files; stored relative to the index folder.
PATH_KEYS = ("head_weights", "head_config", "demo_dir", "backbone_dir")


def flat_ip_index(vectors: np.ndarray) -> faiss.Index:
    """An exact inner-product index (cosine similarity on L2-normalised vectors)."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def build_index(
    image_embeddings: list[str],
    text_embeddings: str,
    images_path: str,
    studies_path: str,
    labels_path: str,
    head_weights: str,
    head_config: str,
    output_dir: str,
    backbone_name: str,
    variant: str,
    demo_dir: str | None = None,
    frontal_only: bool = True,
    split: str = "test",
) -> None:
    """Project the `split` gallery through the variant's heads and write FAISS indexes + id maps."""
    heads, head_cfg = load_heads(head_weights, head_config)
    load = lambda name: load_split(
        image_embeddings, text_embeddings, images_path, studies_path, labels_path, name, frontal_only
    )  # noqa: E731
    gallery, train = load(split), load("train")
    images = project(heads.image, gallery.image_vectors)
    texts = project(heads.text, gallery.text_vectors)
    first, of_study = dedupe_reports(gallery.reports)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = gallery.metadata.get("spec")
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

    train_texts = project(heads.text, train.text_vectors)
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
                "head_weights": _relative(head_weights, out),
                "head_config": _relative(head_config, out),
                "demo_dir": _relative(demo_dir, out) if demo_dir else None,
                "backbone_dir": _relative(spec[len(LOCAL_PREFIX) :], out) if _is_local(spec) else None,
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


def _is_local(spec: str | None) -> bool:
    return bool(spec) and spec.startswith(LOCAL_PREFIX)


def index_backbone_spec(info: dict) -> str:
    """The spec to load the backbone of an index (`read_index_info`'s answer) with.

    A `local-dir:` backbone loads from `backbone_dir`, found relative to the index folder (the results
    folder moved or copied as a whole, searched from anywhere); where that folder is gone, from the
    spec's own path (a model folder outside the results folder that stayed where it was).
    Other specs (`demo` with `demo_dir`, hub and named ones) are returned as they are.
    """
    spec = info["spec"]
    folder = info.get("backbone_dir")
    if _is_local(spec) and folder and (Path(folder).is_dir() or not Path(spec[len(LOCAL_PREFIX) :]).is_dir()):
        return f"{LOCAL_PREFIX}{folder}"
    return spec


def read_index_info(index_dir: str | Path) -> dict:
    """Read an index folder's `index.json`, with its file paths resolved against the folder.

    Absolute paths (indexes written before paths were relative) are kept as they are.
    """
    folder = Path(index_dir)
    info = json.loads((folder / "index.json").read_text())
    if not isinstance(info, dict):
        raise ValueError(f"{folder / 'index.json'} holds a JSON {type(info).__name__}, not an object")
    for key in PATH_KEYS:
        if info.get(key):
            info[key] = str((folder / info[key]).resolve())
    return info
