"""The demo tables come from a run's files (benchmarks/demo_tables.py), and the README and docs/methods.md quote
them as written (benchmarks/demo_tables.md, that script's output for the run behind them)."""

from __future__ import annotations

import re
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


def tables(markdown: str) -> dict[str, str]:
    """Section title -> its table, as benchmarks/demo_tables.py writes them."""
    return {block.split("\n")[0]: block.split("\n\n")[1].strip() for block in markdown.split("### ")[1:]}


def check_headline_is_cut_from_the_full_tables(markdown: str) -> int:
    """Every cell of the headline table is the same row and column of a full table (`demo` rows from the
    main table, other backbones' from the fine-tuning table); returns the number of rows checked."""
    main = table_rows(markdown, "Retrieval, backbone `demo` (metrics/summary.csv)")
    finetune = table_rows(markdown, "Fine-tuning (metrics/summary.csv)")
    sections = tables(markdown)

    def header(title: str) -> list[str]:
        return [c.strip() for c in sections[title].splitlines()[0].strip("|").split(" | ")][1:]

    main_header = header("Retrieval, backbone `demo` (metrics/summary.csv)")
    finetune_header = header("Fine-tuning (metrics/summary.csv)")
    headline_header = header("Headline (metrics/summary.csv)")
    headline = table_rows(markdown, "Headline (metrics/summary.csv)")
    for name, cells in headline.items():
        backbone, variant = (part.strip("` ") for part in name.split(" / "))
        if backbone == "demo":
            full, columns = main[variant], main_header
        else:
            full, columns = finetune[name], finetune_header
        assert cells == [full[columns.index(column)] for column in headline_header], name
    return len(headline)


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
    # tiny.yaml trains zeroshot, multitask and xtra on demo and multitask on demo_ft
    assert check_headline_is_cut_from_the_full_tables(done.stdout) == 4

    zeroshot_rows = table_rows(done.stdout, "Zero-shot classification by text prompts (metrics/summary.csv)")
    auc = summary.filter(
        (pl.col("backbone") == "demo")
        & (pl.col("variant") == "multitask")
        & (pl.col("metric") == "macro_auc")
        & (pl.col("n_seeds") == 2)
    ).row(0, named=True)
    assert zeroshot_rows["`demo` / multitask"][0] == f"{auc['value']:.3f} ± {auc['sd']:.3f}"
    assert zeroshot_rows["`demo` / zeroshot"][1].count("[") == 1  # the untrained head with its CI

    xtra = pl.read_csv(tiny_results / "metrics/xtra_auc.csv")
    macro = xtra.filter((pl.col("label") == "macro") & (pl.col("method") == "knn")).row(0, named=True)
    assert table_rows(done.stdout, "X-TRA (metrics/xtra_auc.csv)")["kNN label voting"][0].startswith(
        f"{macro['value']:.3f} ["
    )
    generation = table_rows(done.stdout, "Report generation (metrics/generation.csv)")
    assert set(generation) >= {"random train report", "`zeroshot` retrieval", "oracle among the top 5 (`xtra`)"}


def test_readme_and_methods_quote_the_demo_tables_as_written():
    """The README's one short table is the headline section of benchmarks/demo_tables.md and docs/methods.md
    holds the five full tables, each verbatim, so neither can drift from the file the script wrote."""
    written = (REPO / "benchmarks/demo_tables.md").read_text()
    sections = tables(written)
    assert list(sections) == [
        "Headline (metrics/summary.csv)",
        "Retrieval, backbone `demo` (metrics/summary.csv)",
        "Fine-tuning (metrics/summary.csv)",
        "Zero-shot classification by text prompts (metrics/summary.csv)",
        "X-TRA (metrics/xtra_auc.csv)",
        "Report generation (metrics/generation.csv)",
    ]
    headline, *full = sections.values()
    readme = (REPO / "README.md").read_text()
    methods = (REPO / "docs/methods.md").read_text()
    assert headline in readme
    readme_tables = [line for line in readme.splitlines() if line.startswith("| ") and re.search(r"\d\.\d{3}", line)]
    assert readme_tables == headline.splitlines()[2:], "the README's only numbers table is the headline one"
    for table in full:
        assert table in methods, table.splitlines()[0]


def test_headline_is_cut_from_the_full_tables():
    assert check_headline_is_cut_from_the_full_tables((REPO / "benchmarks/demo_tables.md").read_text()) == 5
