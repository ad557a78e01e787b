"""Stage `evaluate` on a hand-built index: every protocol's numbers and clinical precision by finding
match a hand computation (one-hot embeddings: each image's own report is its only non-zero score, and
ties break to the lower gallery index)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mtcxr.models.heads import ProjectionHeads, save_heads
from mtcxr.retrieval.evaluate import EvaluateSettings, evaluate_retrieval
from mtcxr.retrieval.index import build_index
from mtcxr.tables import read_table

from tiny_tree import project_tree, write_tiny_tree

DIM = 8
# Test studies s0..s5 and two train studies s6, s7; each has one PA image.
POSITIVE = [
    ["cardiomegaly"],
    ["cardiomegaly"],
    ["edema"],
    ["no_finding"],
    ["cardiomegaly", "edema"],
    ["pleural_effusion"],
    ["no_finding"],
    ["edema"],
]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    root = tmp_path_factory.mktemp("evaluate")
    vectors = np.eye(DIM, dtype=np.float32)  # study i: image and report both e_i
    paths = write_tiny_tree(
        root,
        ["test"] * 6 + ["train"] * 2,
        [f"Report number {i}." for i in range(8)],
        vectors,
        vectors,
        positive=POSITIVE,
    )
    save_heads(
        ProjectionHeads(DIM, 4, seed=0),
        root / "head.safetensors",
        root / "head.json",
        {"variant": "zeroshot", "trained": False, "losses": {}},
    )  # W2 = 0: the identity
    projected = project_tree(paths, str(root / "head.safetensors"), str(root / "head.json"), root / "projected")
    build_index(projected, str(root / "index"))
    evaluate_retrieval(
        str(root / "index"),
        paths["labels"],
        str(root / "metrics.parquet"),
        str(root / "queries.parquet"),
        str(root / "findings.parquet"),
        EvaluateSettings(ks=(1, 5), precision_k=2, n_boot=50, seed=0, protocols=("mtcxr", "cxr_clip", "label_5x200")),
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
    # Single-finding studies among the five: s0, s1 (cardiomegaly), s2 (edema), s5 (pleural effusion);
    # s4 has two, s3 none. Top 2 of each: itself, then the lowest-index other (all others score 0):
    # s0 -> s1 (hit), s1 -> s0 (hit), s2 -> s0 (miss), s5 -> s0 (miss).
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
    # P@2 by query finding: cardiomegaly queries s0 (s0, s1), s1 (s1, s0), s4 (s4, s0): all positive.
    # edema queries s2 (s2, s0), s4 (s4, s0): half. pleural effusion s5 (s5, s0): half.
    assert i2t["cardiomegaly"] == (1.0, 3)
    assert i2t["edema"] == (0.5, 2)
    assert i2t["pleural_effusion"] == (0.5, 1)
    assert i2t["no_finding"] == (0.5, 1)  # s3 -> (s3, s0)
    assert "atelectasis" not in i2t  # no query has it
