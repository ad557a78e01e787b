"""The demo's result tables, written from a run's own files: `python benchmarks/demo_tables.py results`.

Prints Markdown built from `metrics/summary.csv`, `metrics/xtra_auc.csv` and `metrics/generation.csv` of
the results folder given: a short headline table (the README's Results) and the five full tables
(docs/methods.md, Demo results). The README and docs quote `benchmarks/demo_tables.md`, this script's
output for the run behind them, so every number they show comes from files a command writes, and any
other run can be compared with it: `.ci/run` does so after its demo run and prints what differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

# (task, metric, k, header) of the main table; zeroshot shows a 95% CI where the text discusses one.
MAIN = [
    ("i2t", "recall", 1, "i2t R@1", False),
    ("i2t", "recall", 10, "i2t R@10", True),
    ("i2t", "precision", 10, "i2t P@10", False),
    ("i2t", "balanced_precision", 10, "i2t balanced P@10", True),
    ("t2i", "recall", 10, "t2i R@10", False),
    ("t2i", "balanced_precision", 10, "t2i balanced P@10", False),
    ("classification", "auc", None, "AUC", False),
    ("classification", "silhouette", None, "silhouette", False),
]
FINETUNE_ROWS = [
    ("demo", "zeroshot", "`demo` / zeroshot"),
    ("demo", "multitask", "`demo` / multitask (heads only)"),
    ("demo_ft", "zeroshot", "`demo_ft` / zeroshot (fine-tuned encoders alone)"),
    ("demo_ft", "multitask", "`demo_ft` / multitask"),
]
# (backbone, variant, row name) of the headline table: the zero-shot baseline, the paper's head, X-TRA's
# class-informed head and the fine-tuned backbone; columns are the main table's retrieval and AUC ones.
HEADLINE_ROWS = [
    ("demo", "zeroshot", "`demo` / zeroshot"),
    ("demo", "clip", "`demo` / clip"),
    ("demo", "multitask", "`demo` / multitask"),
    ("demo", "xtra", "`demo` / xtra"),
    ("demo_ft", "multitask", "`demo_ft` / multitask"),
]
HEADLINE_COLUMNS = ("i2t R@10", "i2t balanced P@", "t2i R@10", "AUC")
XTRA_METHODS = [
    ("xtra", "X-TRA (retrieval-augmented)", "xtra - query_only"),
    ("query_only", "same classifier, no retrieval", None),
    ("knn", "kNN label voting", "knn - query_only"),
]
GENERATION_METHODS = [
    (None, "random", "random train report"),
    (None, "most_frequent", "most frequent train report"),
    ("zeroshot", "retrieval", "`zeroshot` retrieval"),
    ("multitask", "retrieval", "`multitask` retrieval"),
    ("xtra", "retrieval", "`xtra` retrieval"),
    ("xtra", "xtra", "`xtra` + X-TRA augmented query"),
    ("xtra", "oracle", "oracle among the top 5 (`xtra`)"),
]
GENERATION_COLUMNS = [
    ("bleu4", "BLEU-4", True),
    ("meteor", "METEOR", False),
    ("rouge_l", "ROUGE-L", False),
    ("cider", "CIDEr", False),
    ("ce_f1_micro", "CE F1 (14)", True),
    ("ce_f1_micro5", "CE F1 (5)", False),
]


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return text.replace("-", "−")


def _interval(low: float | None, high: float | None, signed: bool = False) -> str:
    return f" [{_number(low, signed)}, {_number(high, signed)}]" if low is not None and high is not None else ""


def summary_rows(summary: pl.DataFrame, backbone: str, variant: str, task: str, metric: str, k: int | None = None):
    """The rows of summary.csv for one backbone, variant, task, metric and cut-off (every seed and summary)."""
    return summary.filter(
        (pl.col("backbone") == backbone)
        & (pl.col("variant") == variant)
        & (pl.col("task") == task)
        & (pl.col("metric") == metric)
        & (pl.col("k").is_null() if k is None else pl.col("k") == k)
    )


def _retrieval_cell(summary: pl.DataFrame, backbone: str, variant: str, column: tuple) -> str:
    task, metric, k, _, with_ci = column
    rows = summary_rows(summary, backbone, variant, task, metric, k)
    across = rows.filter(pl.col("n_seeds").fill_null(1) > 1)
    if across.height:  # a trained variant: mean ± sd over its seeds
        row = across.row(0, named=True)
        return f"{_number(row['value'])} ± {row['sd']:.3f}"
    if not rows.height:
        return "–"
    row = rows.row(0, named=True)
    return _number(row["value"]) + (_interval(row["ci_low"], row["ci_high"]) if with_ci else "")


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def _columns(summary: pl.DataFrame) -> list[tuple]:
    """MAIN with the precision k of this run (`evaluate.precision_k`, read off its precision rows)."""
    found = summary.filter((pl.col("task") == "i2t") & (pl.col("metric") == "precision"))["k"].drop_nulls().unique()
    k = int(found.min()) if found.len() else 10
    return [
        (task, metric, k, header.replace("P@10", f"P@{k}"), ci)
        if "precision" in metric
        else (task, metric, kk, header, ci)
        for task, metric, kk, header, ci in MAIN
    ]


def main_table(summary: pl.DataFrame) -> list[str]:
    """Every variant of backbone `demo`: the first full table."""
    present = set(summary.filter(pl.col("backbone") == "demo")["variant"].to_list())
    variants = [v for v in ("zeroshot", "clip", "clip_bce", "clip_supcon", "multitask", "xtra") if v in present]
    columns = _columns(summary)
    rows = [[v] + [_retrieval_cell(summary, "demo", v, c) for c in columns] for v in variants]
    return _table(["variant"] + [c[3] for c in columns], rows)


def headline_table(summary: pl.DataFrame) -> list[str]:
    """A few rows and columns of the main and fine-tuning tables, cell for cell: the README's short table."""
    columns = [c for c in _columns(summary) if c[3].startswith(HEADLINE_COLUMNS)]
    present = set(summary.select("backbone", "variant").unique().iter_rows())
    rows = [
        [name] + [_retrieval_cell(summary, b, v, c) for c in columns]
        for b, v, name in HEADLINE_ROWS
        if (b, v) in present
    ]
    return _table(["backbone / variant"] + [c[3] for c in columns], rows)


def finetune_table(summary: pl.DataFrame) -> list[str]:
    columns = [c for c in _columns(summary) if not c[3].startswith("i2t P@")]
    rows = [[name] + [_retrieval_cell(summary, b, v, c) for c in columns] for b, v, name in FINETUNE_ROWS]
    return _table(["backbone / variant"] + [c[3] for c in columns], rows)


# Zero-shot classification by text prompts (task zeroshot_classification): the headline rows, CI on zeroshot.
ZEROSHOT_COLUMNS = [
    ("zeroshot_classification", "macro_auc", None, "zero-shot macro AUC", True),
    ("zeroshot_classification", "accuracy_5x200", None, "5×200 accuracy", True),
]


def zeroshot_table(summary: pl.DataFrame) -> list[str]:
    present = set(summary.select("backbone", "variant").unique().iter_rows())
    rows = [
        [name] + [_retrieval_cell(summary, b, v, c) for c in ZEROSHOT_COLUMNS]
        for b, v, name in [*HEADLINE_ROWS, ("demo_ft", "zeroshot", "`demo_ft` / zeroshot")]
        if (b, v) in present
    ]
    return _table(["backbone / variant"] + [c[3] for c in ZEROSHOT_COLUMNS], rows)


def xtra_table(xtra: pl.DataFrame) -> list[str]:
    macro = xtra.filter((pl.col("backbone") == "demo") & (pl.col("variant") == "xtra") & (pl.col("label") == "macro"))
    rows = []
    for method, name, difference in XTRA_METHODS:
        row = macro.filter((pl.col("method") == method) & (pl.col("metric") == "auc")).row(0, named=True)
        versus = "–"
        if difference is not None:
            d = macro.filter(pl.col("method") == difference).row(0, named=True)
            versus = f"{_number(d['value'], True)}{_interval(d['ci_low'], d['ci_high'], True)}, p = {d['p_value']:.2g}"
        rows.append([name, _number(row["value"]) + _interval(row["ci_low"], row["ci_high"]), versus])
    return _table(["method", "macro AUC", "vs same classifier without retrieval"], rows)


def generation_table(generation: pl.DataFrame) -> list[str]:
    rows = []
    for variant, method, name in GENERATION_METHODS:
        chosen = generation.filter(
            (pl.col("method") == method)
            & (pl.col("variant").is_null() if variant is None else pl.col("variant") == variant)
            & (pl.col("backbone").is_null() if variant is None else pl.col("backbone") == "demo")
            & pl.col("observation").is_null()
        )
        cells = []
        for metric, _, with_ci in GENERATION_COLUMNS:
            row = chosen.filter(pl.col("metric") == metric).row(0, named=True)
            cells.append(_number(row["value"]) + (_interval(row["ci_low"], row["ci_high"]) if with_ci else ""))
        rows.append([name] + cells)
    return _table(["method"] + [c[1] for c in GENERATION_COLUMNS], rows)


def demo_tables(results: Path) -> str:
    """The headline table and the five full tables, each under a heading naming the file it comes from."""
    summary = pl.read_csv(results / "metrics/summary.csv", infer_schema_length=None)
    sections = [
        ("Headline (metrics/summary.csv)", headline_table(summary)),
        ("Retrieval, backbone `demo` (metrics/summary.csv)", main_table(summary)),
        ("Fine-tuning (metrics/summary.csv)", finetune_table(summary)),
        ("Zero-shot classification by text prompts (metrics/summary.csv)", zeroshot_table(summary)),
        (
            "X-TRA (metrics/xtra_auc.csv)",
            xtra_table(pl.read_csv(results / "metrics/xtra_auc.csv", infer_schema_length=None)),
        ),
        (
            "Report generation (metrics/generation.csv)",
            generation_table(pl.read_csv(results / "metrics/generation.csv", infer_schema_length=None)),
        ),
    ]
    return "\n".join(line for title, table in sections for line in [f"### {title}", "", *table, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a demo run's results folder")
    args = parser.parse_args(argv)
    sys.stdout.write(demo_tables(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
