"""Stage `summarize`: one long table of every number, a readable Markdown pivot, and paired
bootstrap tests of each variant against `zeroshot`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr import metrics
from mtcxr.evaluate import SUMMARY_SCHEMA
from mtcxr.tables import read_table

log = logging.getLogger(__name__)

BASELINE = "zeroshot"
# Columns of the Markdown pivot, in reading order: (task, metric, k); k "P" is the precision k of the run.
HEADLINE = [
    ("i2t", "recall", 1), ("i2t", "recall", 5), ("i2t", "recall", 10), ("i2t", "precision", "P"),
    ("i2t", "balanced_precision", "P"), ("t2i", "recall", 1), ("t2i", "recall", 5), ("t2i", "recall", 10),
    ("t2i", "precision", "P"), ("t2i", "balanced_precision", "P"), ("classification", "auc", None),
    ("classification", "silhouette", None),
]
# Report generation: the corpus metrics that go into summary.csv and summary.md, in reading order.
GENERATION_HEADLINE = ("bleu4", "meteor", "rouge_l", "cider", "ce_f1_micro", "ce_f1_micro5")
GENERATION_NAMES = {"bleu4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr",
                    "ce_f1_micro": "CE F1 (14)", "ce_f1_micro5": "CE F1 (5)"}
PAIRED = [("i2t", "recall", 10), ("i2t", "balanced_precision", "P"), ("t2i", "recall", 10), ("t2i", "balanced_precision", "P")]


def _with_precision_k(columns: list[tuple], summary: pl.DataFrame) -> list[tuple]:
    found = summary.filter(pl.col("metric") == "precision")["k"].drop_nulls().unique().to_list()
    precision_k = found[0] if found else 10
    return [(task, metric, precision_k if k == "P" else k) for task, metric, k in columns]


def summarize(metric_files: list[str], query_files: list[str], reject_files: list[str], output_parquet: str,
              output_csv: str, output_md: str, output_paired: str, n_boot: int = 1000, seed: int = 0,
              xtra_auc_files: Sequence[str] = (), xtra_paired_files: Sequence[str] = (),
              output_xtra: str | None = None, generation_metrics: str | None = None,
              generation_studies: str | None = None, examples: int = 3) -> pl.DataFrame:
    """Concatenate per-variant metrics, write summary.{parquet,csv,md} and the paired tests; return the summary.

    X-TRA's tables (`evaluate_xtra`), where given, add their macro-AUC rows to the summary (task
    `labels_<method>`, metric `macro_auc`) and every per-label row to `output_xtra`. Report
    generation's metrics (`score_generation`), where given, add their headline rows (task
    `generation_<method>`; the baselines have no backbone) and a section with `examples` example
    reports to summary.md.
    """
    generation = read_table(generation_metrics, "generation_metrics") if generation_metrics else None
    xtra_auc = pl.concat([pl.read_parquet(path) for path in xtra_auc_files]) if xtra_auc_files else None
    xtra_paired = pl.concat([pl.read_parquet(path) for path in xtra_paired_files]) if xtra_paired_files else None
    parts = [pl.read_parquet(path) for path in metric_files]
    if xtra_auc is not None:
        parts.append(_xtra_summary_rows(xtra_auc))
    if generation is not None:
        parts.append(_generation_summary_rows(generation))
    summary = pl.concat([part.cast(SUMMARY_SCHEMA) for part in parts])
    summary = summary.sort("backbone", "variant", "task", "metric", "k", nulls_last=False)
    Path(output_parquet).parent.mkdir(parents=True, exist_ok=True)
    summary.write_parquet(output_parquet)
    summary.write_csv(output_csv, float_precision=6)
    paired = paired_against_baseline(metric_files, query_files, n_boot, seed)
    paired.write_csv(output_paired, float_precision=6)
    if output_xtra is not None:
        _xtra_table(xtra_auc, xtra_paired).write_csv(output_xtra, float_precision=6)
    rejects = pl.concat([pl.read_parquet(path) for path in reject_files]) if reject_files else pl.DataFrame()
    markdown = markdown_report(summary, paired, rejects, xtra_paired)
    if generation is not None:
        studies = read_table(generation_studies, "generation_scores") if generation_studies else None
        markdown += "\n" + "\n".join(_generation_markdown(generation, studies, examples, seed))
    Path(output_md).write_text(markdown)
    log.info("summary: %d rows over %d backbone/variant pairs; %d rejected items", summary.height,
             summary.select("backbone", "variant").n_unique(), rejects.height)
    return summary


def _xtra_summary_rows(auc: pl.DataFrame) -> pl.DataFrame:
    """X-TRA's macro AUC per method as summary rows (task `labels_<method>`, n_queries = test images)."""
    return auc.filter(pl.col("label") == "macro").select(
        "backbone", "variant", pl.concat_str([pl.lit("labels_"), pl.col("method")]).alias("task"),
        pl.lit("macro_auc").alias("metric"), pl.lit(None, dtype=pl.Int64).alias("k"), "value", "ci_low", "ci_high",
        pl.col("n_images").alias("n_queries"))


def _generation_summary_rows(generation: pl.DataFrame) -> pl.DataFrame:
    """The headline corpus metrics of every generation method as summary rows (task `generation_<method>`)."""
    return generation.filter(pl.col("metric").is_in(GENERATION_HEADLINE) & pl.col("observation").is_null()).select(
        "backbone", "variant", pl.concat_str([pl.lit("generation_"), pl.col("method")]).alias("task"), "metric",
        pl.lit(None, dtype=pl.Int64).alias("k"), "value", "ci_low", "ci_high", pl.col("n_studies").alias("n_queries"))


def _generation_markdown(generation: pl.DataFrame, studies: pl.DataFrame | None, examples: int, seed: int) -> list[str]:
    """Report generation by method (metric and 95% CI; paired difference against the random report), then examples."""
    headline = generation.filter(pl.col("metric").is_in(GENERATION_HEADLINE) & pl.col("observation").is_null())
    n = int(headline["n_studies"].max() or 0)
    lines = [f"## Report generation by retrieval ({n} test studies, corpus metrics, 95% CI)", "",
             "| method | " + " | ".join(GENERATION_NAMES[m] for m in GENERATION_HEADLINE) + " |",
             "|---|" + "---|" * len(GENERATION_HEADLINE)]
    methods = headline.select("backbone", "variant", "method").unique(maintain_order=True).rows()
    for backbone, variant, method in methods:
        part = headline.filter((pl.col("method") == method) & _same(pl.col("backbone"), backbone)
                               & _same(pl.col("variant"), variant))
        cells = []
        for metric in GENERATION_HEADLINE:
            hit = part.filter(pl.col("metric") == metric)
            cells.append(f"{_fixed(hit['value'][0])} [{_fixed(hit['ci_low'][0])}, {_fixed(hit['ci_high'][0])}]"
                         if hit.height else "–")
        name = method if backbone is None else f"{backbone} / {variant} / {method}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Difference against the random train report (paired bootstrap over studies, 95% CI, two-sided p):", "",
              "| method | BLEU-4 | CE F1 (14) |", "|---|---|---|"]
    for backbone, variant, method in methods:
        if method == "random":
            continue
        cells = []
        for metric in ("bleu4", "ce_f1_micro"):
            hit = headline.filter((pl.col("method") == method) & _same(pl.col("backbone"), backbone)
                                  & _same(pl.col("variant"), variant) & (pl.col("metric") == metric))
            row = hit.row(0, named=True) if hit.height else None
            cells.append(_paired_cell({"difference": row["difference"], "ci_low": row["difference_low"],
                                       "ci_high": row["difference_high"], "p_value": row["p_value"], "n_boot": row["n_boot"]})
                         if row and row["difference"] is not None else "–")
        name = method if backbone is None else f"{backbone} / {variant} / {method}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    if studies is not None and examples and studies.height:
        lines += _generation_examples(studies, headline, examples, seed)
    return lines


def _same(column: pl.Expr, value: str | None) -> pl.Expr:
    return column.is_null() if value is None else column == value


def _generation_examples(studies: pl.DataFrame, headline: pl.DataFrame, examples: int, seed: int) -> list[str]:
    """`examples` test studies (seeded) with the reference and the report of the best retrieval method by CE F1."""
    ranked = headline.filter((pl.col("metric") == "ce_f1_micro") & pl.col("method").is_in(["retrieval", "xtra"]))
    if not ranked.height:
        return []
    best = ranked.sort("value", descending=True).row(0, named=True)
    chosen = studies.filter((pl.col("method") == best["method"]) & (pl.col("backbone") == best["backbone"])
                            & (pl.col("variant") == best["variant"])).sort("study_id")
    picks = np.sort(np.random.default_rng(seed).choice(chosen.height, min(examples, chosen.height), replace=False))
    clip = lambda text: (text[:300] + " …") if len(text) > 300 else text  # noqa: E731
    lines = [f"Examples ({best['backbone']} / {best['variant']} / {best['method']}, the best by CE F1; "
             "studies drawn by seed):", "", "| study | reference | generated | BLEU-4 | CE F1 |", "|---|---|---|---|---|"]
    for row in chosen[picks.tolist()].iter_rows(named=True):
        reference, generated = (clip(row[key]).replace("|", "/") for key in ("reference", "generated"))
        lines.append(f"| {row['study_id']} | {reference} | {generated} | {_fixed(row['bleu4'])} | {_fixed(row['ce_f1'])} |")
    return lines + [""]


def _xtra_table(auc: pl.DataFrame | None, paired: pl.DataFrame | None) -> pl.DataFrame:
    """One CSV of X-TRA's per-label and macro AUC by method, then its paired tests against query_only."""
    columns = {"backbone": pl.String, "variant": pl.String, "method": pl.String, "label": pl.String,
               "metric": pl.String, "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
               "p_value": pl.Float64, "n_images": pl.Int64, "n_positive": pl.Int64}
    parts = [pl.DataFrame(schema=columns)]
    if auc is not None:
        parts.append(auc.with_columns(metric=pl.lit("auc"), p_value=pl.lit(None, dtype=pl.Float64)).select(list(columns)))
    if paired is not None:
        parts.append(paired.select(
            "backbone", "variant", pl.concat_str([pl.col("method"), pl.lit(" - "), pl.col("baseline")]).alias("method"),
            pl.lit("macro").alias("label"), pl.lit("macro_auc_difference").alias("metric"),
            pl.col("difference").alias("value"), "ci_low", "ci_high", "p_value", "n_images",
            pl.lit(None, dtype=pl.Int64).alias("n_positive")).cast(columns))
    return pl.concat(parts)


def paired_against_baseline(metric_files: list[str], query_files: list[str], n_boot: int, seed: int) -> pl.DataFrame:
    """Paired bootstrap (same queries) of each variant minus `zeroshot`, per backbone, on the PAIRED metrics."""
    rows = []
    by_variant = {}
    paired_metrics = _with_precision_k(PAIRED, pl.concat([pl.read_parquet(path) for path in metric_files]))
    for metric_file, query_file in zip(metric_files, query_files):
        info = pl.read_parquet(metric_file, columns=["backbone", "variant"]).head(1)
        if info.height:
            by_variant[(info["backbone"][0], info["variant"][0])] = pl.read_parquet(query_file)
    for (backbone, variant), queries in sorted(by_variant.items()):
        baseline = by_variant.get((backbone, BASELINE))
        if variant == BASELINE or baseline is None:
            continue
        for task, metric, k in paired_metrics:
            groups = None
            if metric.startswith("balanced_"):
                metric, groups = metric.removeprefix("balanced_"), True
            pick = lambda table: table.filter((pl.col("task") == task) & (pl.col("metric") == metric) & (pl.col("k") == k)).sort("query")  # noqa: E731
            a, b = pick(baseline), pick(queries)
            if not a.height or a.height != b.height:
                continue
            classes = a["abnormal"].to_numpy() if groups else None
            test = metrics.paired_bootstrap(a["value"].to_numpy(), b["value"].to_numpy(), n_boot, seed, groups=classes)
            name = f"balanced_{metric}" if groups else metric
            rows.append({"backbone": backbone, "variant": variant, "baseline": BASELINE, "task": task, "metric": name,
                         "k": k, **test, "n_boot": n_boot, "n_queries": a.height})
    # n_boot travels with each p-value: p = 1 / (n_boot + 1) means "below the bootstrap's resolution".
    schema = {"backbone": pl.String, "variant": pl.String, "baseline": pl.String, "task": pl.String, "metric": pl.String,
              "k": pl.Int64, "difference": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
              "p_value": pl.Float64, "n_boot": pl.Int64, "n_queries": pl.Int64}
    return pl.DataFrame(rows, schema=schema)


def _fixed(value: float, signed: bool = False) -> str:
    """Return `value` to 3 decimals (with its sign if `signed`); anything that rounds to zero is "0.000", never "-0.000"."""
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return "0.000" if float(text) == 0 else text


def _p_text(p_value: float, n_boot: int) -> str:
    """Return "p = 0.0123", or "p < 0.001" when p is at the floor of a bootstrap of `n_boot` resamples."""
    if p_value <= metrics.p_value_floor(n_boot) * (1 + 1e-9):
        # No resample crossed zero, so p is below resolution; 1/n_boot (> the floor 1/(n_boot+1)) reads as p < 0.001.
        return f"p < {1 / n_boot:.3g}"
    return f"p = {p_value:.3g}"


def _paired_cell(test: dict) -> str:
    """Return "difference [low, high] p" for one row of the paired table."""
    return (f"{_fixed(test['difference'], True)} [{_fixed(test['ci_low'], True)}, {_fixed(test['ci_high'], True)}] "
            f"{_p_text(test['p_value'], test['n_boot'])}")


def _cell(summary: pl.DataFrame, backbone: str, variant: str, task: str, metric: str, k: int | None) -> str:
    match = summary.filter((pl.col("backbone") == backbone) & (pl.col("variant") == variant) & (pl.col("task") == task)
                           & (pl.col("metric") == metric) & (pl.col("k").is_null() if k is None else pl.col("k") == k))
    if not match.height or match["value"][0] is None or np.isnan(match["value"][0]):
        return "–"
    row = match.row(0, named=True)
    if row["ci_low"] is None:
        return _fixed(row["value"])
    return f"{_fixed(row['value'])} [{_fixed(row['ci_low'])}, {_fixed(row['ci_high'])}]"


def _xtra_markdown(summary: pl.DataFrame, paired: pl.DataFrame | None) -> list[str]:
    """X-TRA's macro AUC by method, with the paired difference against query_only, per backbone and variant."""
    rows = summary.filter(pl.col("task").str.starts_with("labels_") & (pl.col("metric") == "macro_auc"))
    if not rows.height:
        return []
    lines = ["## X-TRA: multi-label classification (macro ROC-AUC over the test images, 95% CI)", "",
             "| backbone | variant | method | macro AUC | vs query_only |", "|---|---|---|---|---|"]
    for row in rows.sort("backbone", "variant", "task").iter_rows(named=True):
        method = row["task"].removeprefix("labels_")
        test = None
        if paired is not None:
            hit = paired.filter((pl.col("backbone") == row["backbone"]) & (pl.col("variant") == row["variant"])
                                & (pl.col("method") == method))
            test = hit.row(0, named=True) if hit.height else None
        value = f"{_fixed(row['value'])} [{_fixed(row['ci_low'])}, {_fixed(row['ci_high'])}]"
        lines.append(f"| {row['backbone']} | {row['variant']} | {method} | {value} | "
                     f"{_paired_cell(test) if test else '–'} |")
    return lines + [""]


def markdown_report(summary: pl.DataFrame, paired: pl.DataFrame, rejects: pl.DataFrame,
                    xtra_paired: pl.DataFrame | None = None) -> str:
    """A pivot per backbone with variants as rows and headline metrics (95% CI) as columns."""
    lines = ["# mtcxr results", "", "Values with 95% bootstrap confidence intervals over queries. "
             "`balanced_precision` is the mean of the normal-query and abnormal-query Precision@k; relevance "
             "is having the query's normal/abnormal status. Every number is in `summary.csv`.", ""]
    headline, paired_columns = _with_precision_k(HEADLINE, summary), _with_precision_k(PAIRED, summary)
    headers = [f"{task} {metric}" + (f"@{k}" if k is not None else "") for task, metric, k in headline]
    retrieval = summary.filter(~pl.col("task").str.starts_with("generation_"))
    for backbone in retrieval["backbone"].drop_nulls().unique().sort().to_list():
        lines += [f"## Backbone `{backbone}`", "", "| variant | " + " | ".join(headers) + " |",
                  "|---|" + "---|" * len(headers)]
        variants = summary.filter(pl.col("backbone") == backbone)["variant"].unique().to_list()
        variants.sort(key=lambda v: (v != BASELINE, v))
        for variant in variants:
            cells = [_cell(summary, backbone, variant, *column) for column in headline]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
        tests = paired.filter(pl.col("backbone") == backbone)
        if tests.height:
            lines += [f"Paired bootstrap against `{BASELINE}` (difference, 95% CI, two-sided p):", "",
                      "| variant | " + " | ".join(f"{t} {m}@{k}" for t, m, k in paired_columns) + " |",
                      "|---|" + "---|" * len(paired_columns)]
            for variant in tests["variant"].unique().sort().to_list():
                cells = []
                for task, metric, k in paired_columns:
                    hit = tests.filter((pl.col("variant") == variant) & (pl.col("task") == task) & (pl.col("metric") == metric) & (pl.col("k") == k))
                    cells.append(_paired_cell(hit.row(0, named=True)) if hit.height else "–")
                lines.append(f"| {variant} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += _xtra_markdown(summary, xtra_paired)
    if rejects.height:
        counts = rejects.group_by("stage", "reason").len().sort("len", descending=True)
        lines += [f"## Rejected items: {rejects.height}", "", "| stage | reason | count |", "|---|---|---|"]
        lines += [f"| {row['stage']} | {row['reason']} | {row['len']} |" for row in counts.head(20).iter_rows(named=True)]
    else:
        lines += ["No item was rejected."]
    return "\n".join(lines) + "\n"
