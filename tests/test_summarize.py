"""Stage `summarize`: the paired tests against `zeroshot`, the across-seed rows, and how summary.md prints them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mtcxr.summary.summarize import SummaryInputs, SummaryOutputs, summarize
from mtcxr.tables import CONTRACTS, read_table

N = 40
ABNORMAL = np.arange(N) % 2 == 0
# The same precision reached along two float paths: 0.1 + 0.2 is 0.30000000000000004.
NOISY_PRECISION = {"zeroshot": np.full(N, 0.1 + 0.2), "multitask": np.full(N, 0.3)}
RECALL = {"zeroshot": np.zeros(N), "multitask": np.ones(N)}
T2I_RECALL = {"zeroshot": np.zeros(N), "multitask": (np.arange(N) < 3).astype(float)}


def write_run(folder: Path, variant: str, seed: int | None, per_query: list[tuple]) -> tuple[str, str]:
    """Write one run's metrics and per-query files (contracts `metrics`, `metric_queries`); return their paths."""
    queries = pl.concat(
        [
            pl.DataFrame(
                {"task": task, "metric": metric, "k": k, "query": np.arange(N), "abnormal": ABNORMAL, "value": values},
                schema=CONTRACTS["metric_queries"],
            )
            for task, metric, k, values in per_query
        ]
    )
    rows = [
        {
            "task": task,
            "metric": metric,
            "k": k,
            "value": float(np.mean(values)),
            "ci_low": float(np.min(values)),
            "ci_high": float(np.max(values)),
        }
        for task, metric, k, values in per_query
    ]
    rows.append({"task": "classification", "metric": "silhouette", "k": None, "value": -4e-5})
    run = {"backbone": "demo", "variant": variant, "seed": seed, "n_seeds": None if seed is None else 1, "n_queries": N}
    table = pl.DataFrame(
        [{c: {**run, **row}.get(c) for c in CONTRACTS["metrics"]} for row in rows], schema=CONTRACTS["metrics"]
    )
    name = f"{variant}_{seed}"
    table.write_parquet(folder / f"{name}_metrics.parquet")
    queries.write_parquet(folder / f"{name}_queries.parquet")
    return str(folder / f"{name}_metrics.parquet"), str(folder / f"{name}_queries.parquet")


def run_summarize(folder: Path, files: list[tuple[str, str]]) -> pl.DataFrame:
    return summarize(
        SummaryInputs(metrics=[m for m, _ in files], queries=[q for _, q in files]),
        SummaryOutputs(
            str(folder / "s.parquet"), str(folder / "s.csv"), str(folder / "s.md"), str(folder / "paired.csv")
        ),
        n_boot=1000,
        seed=0,
    )


def test_paired_tests_snap_float_noise_and_floor_p(tmp_path: Path):
    files = [
        write_run(
            tmp_path,
            variant,
            None if variant == "zeroshot" else 0,
            [
                ("i2t", "recall", 10, RECALL[variant]),
                ("i2t", "precision", 10, NOISY_PRECISION[variant]),
                ("t2i", "recall", 10, T2I_RECALL[variant]),
            ],
        )
        for variant in ("zeroshot", "multitask")
    ]
    run_summarize(tmp_path, files)
    paired = pl.read_csv(tmp_path / "paired.csv").sort("task", "metric")
    columns = ["task", "metric", "seed", "difference", "ci_low", "ci_high", "p_value", "method", "n_boot"]
    assert paired.select(columns).rows() == [
        ("i2t", "balanced_precision", 0, 0.0, 0.0, 0.0, 1.0, "query_bootstrap", 1000),  # was -5.55e-17 p=0
        ("i2t", "recall", 0, 1.0, 1.0, 1.0, 0.000999, "query_bootstrap", 1000),  # 1/1001, written to 6 decimals
        ("t2i", "recall", 0, 0.075, 0.0, 0.175, 0.07, "query_bootstrap", 1000),
    ]
    report = (tmp_path / "s.md").read_text()
    # Columns with data: i2t recall@10, i2t balanced_precision@10, t2i recall@10.
    cells = ["+1.000 [+1.000, +1.000] p < 0.001", "0.000 [0.000, 0.000] p = 1", "+0.075 [0.000, +0.175] p = 0.07"]
    assert f"| multitask | {' | '.join(cells)} |" in report
    assert "paired bootstrap over test queries" in report
    assert "-0.000" not in report
    assert "| 0.000 |" in report  # the silhouette of -0.00004


def test_across_seed_rows_mean_sd_and_seed_query_test(tmp_path: Path):
    """Three seeds whose recall differs by seed only: the mean and sd are the seeds', the interval
    covers the seed spread (a query-only bootstrap would give [x, x]), and the paired test pools seeds."""
    files = [write_run(tmp_path, "zeroshot", None, [("i2t", "recall", 10, np.zeros(N))])]
    levels = {0: 0.2, 1: 0.4, 2: 0.9}  # per seed, every query scores the same
    files += [
        write_run(tmp_path, "multitask", seed, [("i2t", "recall", 10, np.full(N, level))])
        for seed, level in levels.items()
    ]
    summary = run_summarize(tmp_path, files)
    across = summary.filter((pl.col("variant") == "multitask") & (pl.col("n_seeds") == 3) & (pl.col("task") == "i2t"))
    row = across.row(0, named=True)
    assert row["seed"] is None and row["value"] == pytest.approx(0.5)
    assert row["sd"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert 0.2 <= row["ci_low"] < 0.4 and 0.7 < row["ci_high"] <= 0.9
    per_seed = summary.filter((pl.col("variant") == "multitask") & (pl.col("n_seeds") == 1) & (pl.col("task") == "i2t"))
    assert sorted(per_seed["seed"].to_list()) == [0, 1, 2]
    assert read_table(tmp_path / "s.parquet", "metrics").height == summary.height

    paired = pl.read_csv(tmp_path / "paired.csv")
    pooled = paired.filter(pl.col("method") == "seed_query_bootstrap").row(0, named=True)
    assert pooled["seed"] is None and pooled["n_seeds"] == 3
    assert pooled["difference"] == pytest.approx(0.5) and 0.2 <= pooled["ci_low"] and pooled["ci_high"] <= 0.9
    assert paired.filter(pl.col("method") == "query_bootstrap").height == 3  # one per seed, each [x, x]

    report = (tmp_path / "s.md").read_text()
    assert "mean ± standard deviation over 3 training seeds" in report
    assert f"| multitask | – | – | 0.500 ± {np.std([0.2, 0.4, 0.9], ddof=1):.3f} |" in report
    assert "seed-and-query bootstrap" in report


def test_summary_without_mtcxr_shows_the_protocols_present_and_says_what_was_not_computed(tmp_path: Path):
    """evaluate.protocols [cxr_clip, label_5x200]: no i2t/t2i rows. The main table keeps only the columns that
    have rows (no precision@10 header guessed), a note says what mtcxr would add, the others are shown."""
    per_query = [
        ("cxr_clip_i2t", "recall", 10, None),
        ("label_5x200_i2t", "precision", 10, None),
        ("label_5x200_t2i", "precision", 10, None),
    ]
    files = [
        write_run(tmp_path, "zeroshot", None, [(t, m, k, np.zeros(N)) for t, m, k, _ in per_query]),
        write_run(tmp_path, "multitask", 0, [(t, m, k, np.ones(N)) for t, m, k, _ in per_query]),
    ]
    run_summarize(tmp_path, files)
    report = (tmp_path / "s.md").read_text()
    main = report.split("## Backbone `demo`")[1].split("Paired difference")[0]
    # write_run gives each run a silhouette and no AUC.
    assert "| variant | classification auc | classification silhouette |" in main.splitlines()
    assert "| multitask | – | 0.000 |" in main.splitlines()
    assert (
        "mtcxr's own retrieval metrics (i2t and t2i Recall@K, Precision@k, clinical precision by query finding): "
        "not computed. `evaluate.protocols` does not include `mtcxr`; add it to compute them."
    ) in main
    assert "precision@" not in main and "i2t recall" not in main
    paired_header = "| variant | cxr_clip_i2t recall@10 | label_5x200_i2t precision@10 | label_5x200_t2i precision@10 |"
    assert paired_header in report.splitlines()
    assert (
        "| multitask | – | – | 1.000 [1.000, 1.000] | – | – | – | 1.000 [1.000, 1.000] | – | – | 1.000 [1.000, 1.000] |"
        in (report.splitlines())
    )


def test_summary_headers_use_the_runs_precision_k(tmp_path: Path):
    """evaluate.precision_k 5: the main and paired tables say precision@5, never a guessed @10."""
    per_query = [
        ("i2t", "recall", 10, None),
        ("i2t", "precision", 5, None),
        ("t2i", "recall", 10, None),
        ("t2i", "precision", 5, None),
    ]
    files = [
        write_run(tmp_path, variant, seed, [(t, m, k, RECALL[variant]) for t, m, k, _ in per_query])
        for variant, seed in (("zeroshot", None), ("multitask", 0))
    ]
    run_summarize(tmp_path, files)
    report = (tmp_path / "s.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| variant | i2t recall@1 |"))
    assert header.split(" | ")[4:6] == ["i2t precision@5", "i2t balanced_precision@5"]
    assert header.split(" | ")[9:11] == ["t2i precision@5", "t2i balanced_precision@5"]
    assert "precision@10" not in report
    assert "not computed" not in report
    paired = next(line for line in report.splitlines() if line.startswith("| variant | i2t recall@10 |"))
    assert "i2t balanced_precision@5" in paired and "t2i balanced_precision@5" in paired


def test_collapsed_embeddings_are_flagged_in_summary_md(tmp_path: Path, caplog):
    files = []
    for variant, seed, cosine in (("zeroshot", None, 0.99991), ("multitask", 0, 0.41)):
        metrics_path, queries_path = write_run(tmp_path, variant, seed, [("i2t", "recall", 10, RECALL[variant])])
        table = pl.read_parquet(metrics_path)
        spread = table.head(1).with_columns(
            task=pl.lit("embeddings"), metric=pl.lit("image_mean_cosine"), k=pl.lit(None, dtype=pl.Int64), value=cosine
        )
        pl.concat([table, spread]).write_parquet(metrics_path)
        files.append((metrics_path, queries_path))
    with caplog.at_level("WARNING"):
        run_summarize(tmp_path, files)
    report = (tmp_path / "s.md").read_text()
    assert report.count("Warning: collapsed embeddings") == 1
    assert "test image embeddings of `demo`/`zeroshot` have a mean pairwise cosine of 0.9999" in report
    assert "demo/multitask" not in caplog.text and "demo/zeroshot" in caplog.text
