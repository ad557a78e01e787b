"""Stage `evaluate` on a hand-built index: every protocol's numbers and clinical precision by finding
match a hand computation (one-hot embeddings: each image's own report is its only non-zero score, and
ties break to the lower gallery index)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mtcxr.embeddings import write_embeddings
from mtcxr.evaluate import evaluate_retrieval
from mtcxr.heads import ProjectionHeads, save_heads
from mtcxr.index import build_index
from mtcxr.tables import CHEXPERT_LABELS, read_table, write_table

DIM = 8
# Test studies t0..t5 and two train studies; each test study has one PA image.
POSITIVE = {
    "t0": ["cardiomegaly"],
    "t1": ["cardiomegaly"],
    "t2": ["edema"],
    "t3": ["no_finding"],
    "t4": ["cardiomegaly", "edema"],
    "t5": ["pleural_effusion"],
    "r0": ["no_finding"],
    "r1": ["edema"],
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    root = tmp_path_factory.mktemp("evaluate")
    studies = list(POSITIVE)
    splits = ["test"] * 6 + ["train"] * 2
    reports = [f"Report number {i}." for i in range(len(studies))]
    write_table(
        pl.DataFrame(
            {
                "study_id": studies,
                "patient_id": [f"p{i}" for i in range(8)],
                "split": splits,
                "findings": reports,
                "impression": [None] * 8,
                "report": reports,
                "dataset": ["t"] * 8,
            }
        ),
        "studies",
        root / "studies.parquet",
    )
    write_table(
        pl.DataFrame(
            {
                "image_id": [f"i{i}" for i in range(8)],
                "study_id": studies,
                "patient_id": [f"p{i}" for i in range(8)],
                "split": splits,
                "view": ["PA"] * 8,
                "path": [f"i{i}.png" for i in range(8)],
                "width": [64] * 8,
                "height": [64] * 8,
            }
        ),
        "images",
        root / "images.parquet",
    )
    labels = {name: [1 if name in POSITIVE[s] else None for s in studies] for name in CHEXPERT_LABELS}
    write_table(
        pl.DataFrame(
            {
                "study_id": studies,
                **labels,
                "abnormal": ["no_finding" not in POSITIVE[s] for s in studies],
                "source": ["dataset"] * 8,
            }
        ),
        "labels",
        root / "labels.parquet",
    )
    vectors = np.eye(DIM, dtype=np.float32)  # study i: image and report both e_i
    meta = {"spec": "demo", "normalized": True}
    write_embeddings(root / "images-0.parquet", "image_id", [f"i{i}" for i in range(8)], vectors, meta)
    write_embeddings(root / "texts.parquet", "study_id", studies, vectors, meta)
    save_heads(
        ProjectionHeads(DIM, 4, seed=0),
        root / "head.safetensors",
        root / "head.json",
        {"variant": "zeroshot", "trained": False, "losses": {}},
    )  # W2 = 0: the identity
    build_index(
        [str(root / "images-0.parquet")],
        str(root / "texts.parquet"),
        str(root / "images.parquet"),
        str(root / "studies.parquet"),
        str(root / "labels.parquet"),
        str(root / "head.safetensors"),
        str(root / "head.json"),
        str(root / "index"),
        "demo",
        "zeroshot",
    )
    evaluate_retrieval(
        str(root / "index"),
        str(root / "labels.parquet"),
        str(root / "metrics.parquet"),
        str(root / "queries.parquet"),
        str(root / "findings.parquet"),
        ks=[1, 5],
        precision_k=2,
        n_boot=50,
        seed=0,
        protocol_names=["mtcxr", "cxr_clip", "label_5x200"],
        per_class=200,
    )
    return (
        read_table(root / "metrics.parquet", "metrics"),
        read_table(root / "queries.parquet", "metric_queries"),
        read_table(root / "findings.parquet", "finding_precision"),
    )


def value(table: pl.DataFrame, task: str, metric: str, k: int | None) -> float:
    same_k = pl.col("k").is_null() if k is None else pl.col("k") == k
    return table.filter((pl.col("task") == task) & (pl.col("metric") == metric) & same_k)["value"].item()


def test_own_report_ranks_first_under_every_protocol(evaluated):
    metrics, queries, _ = evaluated
    assert metrics["seed"].is_null().all() and metrics["n_seeds"].is_null().all()  # untrained: no seed
    for task in ("i2t", "t2i", "cxr_clip_i2t"):
        assert value(metrics, task, "recall", 1) == 1.0
    assert value(metrics, "i2t", "mean_rank", None) == 1.0 and value(metrics, "cxr_clip_i2t", "mean_rank", None) == 1.0
    assert set(metrics.filter(pl.col("task") == "cxr_clip_i2t")["n_queries"]) == {6}
    assert queries.filter(pl.col("task") == "cxr_clip_i2t")["query"].n_unique() == 6


def test_label_5x200_keeps_single_finding_studies_and_counts_class_hits(evaluated):
    metrics, _, _ = evaluated
    # Single-finding studies among the five: t0, t1 (cardiomegaly), t2 (edema), t5 (pleural effusion);
    # t4 has two, t3 none. Top 2 of each: itself, then the lowest-index other (all others score 0):
    # t0 -> t1 (hit), t1 -> t0 (hit), t2 -> t0 (miss), t5 -> t0 (miss).
    for task in ("label_5x200_i2t", "label_5x200_t2i"):
        rows = metrics.filter(pl.col("task") == task)
        assert set(rows["n_queries"]) == {4}
        assert value(metrics, task, "precision", 1) == 1.0
        assert value(metrics, task, "precision", 5) == pytest.approx(np.mean([2 / 4, 2 / 4, 1 / 4, 1 / 4]))


def test_clinical_precision_by_finding(evaluated):
    _, _, findings = evaluated
    i2t = {
        row["finding"]: (row["value"], row["n_queries"])
        for row in findings.filter(pl.col("task") == "i2t").iter_rows(named=True)
    }
    # P@2 by query finding: cardiomegaly queries t0 (t0, t1), t1 (t1, t0), t4 (t4, t0): all positive.
    # edema queries t2 (t2, t0), t4 (t4, t0): half. pleural effusion t5 (t5, t0): half.
    assert i2t["cardiomegaly"] == (1.0, 3)
    assert i2t["edema"] == (0.5, 2)
    assert i2t["pleural_effusion"] == (0.5, 1)
    assert i2t["no_finding"] == (0.5, 1)  # t3 -> (t3, t0)
    assert "atelectasis" not in i2t  # no query has it
