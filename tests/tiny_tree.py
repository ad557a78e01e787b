"""A hand-made results tree for unit tests of the stages after ingest: one PA image per study, the
studies/images/labels tables and image and report embeddings, laid out as the workflow lays them out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from mtcxr.embedding_io import write_embeddings
from mtcxr.tables import CHEXPERT_LABELS, CONTRACTS, write_table


def write_tiny_tree(
    results: Path,
    splits: list[str],
    reports: list[str],
    image_vectors: np.ndarray,
    text_vectors: np.ndarray,
    positive: list[list[str]] | None = None,
    abnormal: list[bool] | None = None,
    source: str = "dataset",
) -> dict[str, str]:
    """Write study i (`s{i}`, patient `p{i}`, image `i{i}`) for every entry of `splits`; return the paths.

    `positive[i]` lists study i's positive CheXpert labels (the others are left unmentioned);
    `abnormal` defaults to "No Finding is not positive".
    """
    n = len(splits)
    studies = [f"s{i}" for i in range(n)]
    positive = positive or [[] for _ in range(n)]
    abnormal = abnormal if abnormal is not None else ["no_finding" not in p for p in positive]
    paths = {
        "studies": results / "data/studies.parquet",
        "images": results / "data/images.parquet",
        "labels": results / "labels/labels.parquet",
        "image_embeddings": results / "embeddings/demo/images-0.parquet",
        "text_embeddings": results / "embeddings/demo/texts.parquet",
    }
    common = {"study_id": studies, "patient_id": [f"p{i}" for i in range(n)], "split": splits}
    write_table(
        pl.DataFrame(
            {**common, "findings": reports, "impression": [None] * n, "report": reports, "dataset": ["test"] * n}
        ),
        "studies",
        paths["studies"],
    )
    write_table(
        pl.DataFrame(
            {
                "image_id": [f"i{i}" for i in range(n)],
                **common,
                "view": ["PA"] * n,
                "path": [f"i{i}.png" for i in range(n)],
                "width": [64] * n,
                "height": [64] * n,
            }
        ),
        "images",
        paths["images"],
    )
    labels = {name: pl.Series([1 if name in p else None for p in positive], dtype=pl.Int8) for name in CHEXPERT_LABELS}
    write_table(
        pl.DataFrame({"study_id": studies, **labels, "abnormal": abnormal, "source": [source] * n}),
        "labels",
        paths["labels"],
    )
    meta = {"spec": "demo", "normalized": True}
    write_embeddings(paths["image_embeddings"], "image_id", [f"i{i}" for i in range(n)], image_vectors, meta)
    write_embeddings(paths["text_embeddings"], "study_id", studies, text_vectors, meta)
    return {name: str(path) for name, path in paths.items()}


def write_tiny_demo_backbone(folder: Path, dim: int, image_size: int = 32) -> Path:
    """An untrained backbone of the demo's architecture (ModifiedResNet, 2-layer text) as a local-dir folder."""
    import open_clip
    import torch

    from mtcxr.models.backbone import CLIP_MEAN, CLIP_STD, save_local_dir
    from mtcxr.models.demo import demo_model_cfg

    model_cfg = demo_model_cfg(dim, image_size)  # ModifiedResNet: visual.image_size is an int
    torch.manual_seed(0)
    preprocess = {
        "size": image_size,
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    return save_local_dir(open_clip.CLIP(**model_cfg), model_cfg, preprocess, folder)


def protocol_metrics(
    protocols: list[str],
    variants: tuple[str, ...] = ("zeroshot", "multitask"),
    backbone: str = "demo",
    ks: tuple[int, ...] = (1, 5, 10),
    precision_k: int = 5,
    n_queries: int = 40,
) -> pl.DataFrame:
    """A `metrics` table (summary.parquet) holding the rows mtcxr.retrieval.evaluate writes for `protocols`, one run
    per variant (no seed) with a 95% interval of ±0.05: mtcxr's i2t/t2i Recall@`ks`, mean rank and
    Precision@`precision_k` (with its normal, abnormal and balanced parts), CXR-CLIP's i2t Recall@1/5/10
    and mean rank, 5x200's i2t/t2i Precision@1/5/10, and the classification rows every run has."""
    rows: list[tuple] = [("classification", "auc", None), ("classification", "silhouette", None)]
    if "mtcxr" in protocols:
        for task in ("i2t", "t2i"):
            rows += [(task, "recall", k) for k in ks] + [(task, "mean_rank", None)]
            for metric in ("precision", "precision_normal", "precision_abnormal", "balanced_precision"):
                rows.append((task, metric, precision_k))
    if "cxr_clip" in protocols:
        rows += [("cxr_clip_i2t", "recall", k) for k in (1, 5, 10)] + [("cxr_clip_i2t", "mean_rank", None)]
    if "label_5x200" in protocols:
        rows += [(task, "precision", k) for task in ("label_5x200_i2t", "label_5x200_t2i") for k in (1, 5, 10)]
    table = [
        {
            "backbone": backbone,
            "variant": variant,
            "task": task,
            "metric": metric,
            "k": k,
            "value": (value := 0.2 + 0.1 * v + 0.01 * i),
            "ci_low": value - 0.05,
            "ci_high": value + 0.05,
            "n_queries": n_queries,
        }
        for v, variant in enumerate(variants)
        for i, (task, metric, k) in enumerate(rows)
    ]
    return pl.DataFrame(table, schema=CONTRACTS["metrics"])


def project_tree(
    paths: dict[str, str], head_weights: str, head_config: str, folder: Path, variant: str = "zeroshot"
) -> str:
    """Project a tree's embeddings through heads (the `project_embeddings` stage) into `folder`; return it."""
    from mtcxr.models.project import EmbeddingInputs, project_embeddings

    inputs = EmbeddingInputs(
        [paths["image_embeddings"]], paths["text_embeddings"], paths["images"], paths["studies"], paths["labels"]
    )
    project_embeddings(
        inputs, head_weights, head_config, str(folder), {"backbone": "demo", "variant": variant, "seed": 0}
    )
    return str(folder)
