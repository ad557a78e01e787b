"""Stage `summarize`: the paired tests against `zeroshot` and how summary.md prints them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from mtcxr.evaluate import QUERY_SCHEMA, SUMMARY_SCHEMA
from mtcxr.summarize import summarize

N = 40
ABNORMAL = np.arange(N) % 2 == 0
# The same precision reached along two float paths: 0.1 + 0.2 is 0.30000000000000004.
NOISY_PRECISION = {"zeroshot": np.full(N, 0.1 + 0.2), "multitask": np.full(N, 0.3)}
RECALL = {"zeroshot": np.zeros(N), "multitask": np.ones(N)}
T2I_RECALL = {"zeroshot": np.zeros(N), "multitask": (np.arange(N) < 3).astype(float)}


def write_variant(folder: Path, variant: str) -> tuple[str, str]:
    """Write one variant's metrics and per-query files; return their paths."""
    per_query = [("i2t", "recall", 10, RECALL[variant]), ("i2t", "precision", 10, NOISY_PRECISION[variant]),
                 ("t2i", "recall", 10, T2I_RECALL[variant])]
    queries = pl.concat([pl.DataFrame({"task": task, "metric": metric, "k": k, "query": np.arange(N), "abnormal": ABNORMAL,
                                       "value": values}, schema=QUERY_SCHEMA) for task, metric, k, values in per_query])
    rows = [{"task": task, "metric": metric, "k": k, "value": values.mean(), "ci_low": values.min(), "ci_high": values.max()}
            for task, metric, k, values in per_query]
    rows.append({"task": "classification", "metric": "silhouette", "k": None, "value": -4e-5, "ci_low": None, "ci_high": None})
    summary = pl.DataFrame([{"backbone": "demo", "variant": variant, **row, "n_queries": N} for row in rows], schema=SUMMARY_SCHEMA)
    summary.write_parquet(folder / f"{variant}_metrics.parquet")
    queries.write_parquet(folder / f"{variant}_queries.parquet")
    return str(folder / f"{variant}_metrics.parquet"), str(folder / f"{variant}_queries.parquet")


def test_paired_tests_snap_float_noise_and_floor_p(tmp_path: Path):
    files = [write_variant(tmp_path, variant) for variant in ("zeroshot", "multitask")]
    summarize([m for m, _ in files], [q for _, q in files], [], str(tmp_path / "s.parquet"), str(tmp_path / "s.csv"),
              str(tmp_path / "s.md"), str(tmp_path / "paired.csv"), n_boot=1000, seed=0)
    paired = pl.read_csv(tmp_path / "paired.csv").sort("task", "metric")
    columns = ["task", "metric", "difference", "ci_low", "ci_high", "p_value", "n_boot"]
    assert paired.select(columns).rows() == [
        ("i2t", "balanced_precision", 0.0, 0.0, 0.0, 1.0, 1000),  # was -5.55e-17 [-5.55e-17, -5.55e-17] p=0
        ("i2t", "recall", 1.0, 1.0, 1.0, 0.000999, 1000),  # 1/1001, written to 6 decimals
        ("t2i", "recall", 0.075, 0.0, 0.175, 0.07, 1000),
    ]
    report = (tmp_path / "s.md").read_text()
    # Columns: i2t recall@10, i2t balanced_precision@10, t2i recall@10, t2i balanced_precision@10 (no data).
    cells = ["+1.000 [+1.000, +1.000] p < 0.001", "0.000 [0.000, 0.000] p = 1", "+0.075 [0.000, +0.175] p = 0.07", "–"]
    assert f"| multitask | {' | '.join(cells)} |" in report
    assert "-0.000" not in report
    assert "| 0.000 |" in report  # the silhouette of -0.00004
