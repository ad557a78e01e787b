"""The README's demo tables come from a run's files (benchmarks/demo_tables.py), and the README quotes them as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]


def table_rows(markdown: str, title: str) -> dict[str, list[str]]:
    """First cell -> the other cells of the table under `### {title}`."""
    section = markdown.split(f"### {title}")[1].split("###")[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


@pytest.mark.slow
def test_tables_are_the_runs_numbers(tiny_results):
    done = subprocess.run(
        [sys.executable, "benchmarks/demo_tables.py", str(tiny_results)], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    summary = pl.read_csv(tiny_results / "metrics/summary.csv", infer_schema_length=None)

    def row(variant: str, n_seeds: int | None, metric: str = "recall", k: int = 10) -> dict:
        chosen = summary.filter(
            (pl.col("backbone") == "demo")
            & (pl.col("variant") == variant)
            & (pl.col("task") == "i2t")
            & (pl.col("metric") == metric)
            & (pl.col("k") == k)
            & (pl.col("n_seeds").is_null() if n_seeds is None else pl.col("n_seeds") == n_seeds)
        )
        return chosen.row(0, named=True)

    main = table_rows(done.stdout, "Retrieval, backbone `demo` (metrics/summary.csv)")
    zeroshot, multitask = row("zeroshot", None), row("multitask", 2)
    assert main["zeroshot"][1] == f"{zeroshot['value']:.3f} [{zeroshot['ci_low']:.3f}, {zeroshot['ci_high']:.3f}]"
    assert main["multitask"][1] == f"{multitask['value']:.3f} ± {multitask['sd']:.3f}"
    assert main["zeroshot"][2] == f"{row('zeroshot', None, 'precision', 5)['value']:.3f}"  # the run's precision_k

    xtra = pl.read_csv(tiny_results / "metrics/xtra_auc.csv")
    macro = xtra.filter((pl.col("label") == "macro") & (pl.col("method") == "knn")).row(0, named=True)
    assert table_rows(done.stdout, "X-TRA (metrics/xtra_auc.csv)")["kNN label voting"][0].startswith(
        f"{macro['value']:.3f} ["
    )
    generation = table_rows(done.stdout, "Report generation (metrics/generation.csv)")
    assert set(generation) >= {"random train report", "`zeroshot` retrieval", "oracle among the top 5 (`xtra`)"}


def test_readme_quotes_the_demo_tables_as_written():
    """Each table of benchmarks/demo_tables.md (the run behind the README) stands in the README verbatim."""
    written = (REPO / "benchmarks/demo_tables.md").read_text()
    readme = (REPO / "README.md").read_text()
    tables = [block.split("\n\n")[1].strip() for block in written.split("### ")[1:]]
    assert len(tables) == 4
    for table in tables:
        assert table in readme, table.splitlines()[0]
