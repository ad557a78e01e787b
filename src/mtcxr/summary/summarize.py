"""Stage `summarize`: one long table of every number, a readable Markdown pivot, and paired
bootstrap tests of each variant against `zeroshot`.

A variant trained with several seeds keeps one row per seed and gains across-seed rows (`n_seeds`
> 1): the mean over seeds, their standard deviation, and a 95% interval from the seed-and-query
bootstrap (`metrics.seed_query_bootstrap`); its paired test against `zeroshot` is the same
bootstrap of the per-query differences (`metrics.paired_bootstrap_seeds`).

The files it reads travel as one `SummaryInputs` and those it writes as one `SummaryOutputs` (the rule's
inputs and outputs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr import metrics
from mtcxr.summary.protocol_notes import PROTOCOL_TASKS, missing_protocol_note
from mtcxr.tables import CHEXPERT_DISPLAY, CONTRACTS, conform, headline_rows, read_table, validate_table, write_table

log = logging.getLogger(__name__)

BASELINE = "zeroshot"
# Columns of the Markdown pivot, in reading order: (task, metric, k); k "P" is the precision k of the run.
HEADLINE = [
    ("i2t", "recall", 1),
    ("i2t", "recall", 5),
    ("i2t", "recall", 10),
    ("i2t", "precision", "P"),
    ("i2t", "balanced_precision", "P"),
    ("t2i", "recall", 1),
    ("t2i", "recall", 5),
    ("t2i", "recall", 10),
    ("t2i", "precision", "P"),
    ("t2i", "balanced_precision", "P"),
    ("classification", "auc", None),
    ("classification", "silhouette", None),
]
# Report generation: the corpus metrics that go into summary.csv and summary.md, in reading order.
GENERATION_HEADLINE = ("bleu4", "meteor", "rouge_l", "cider", "ce_f1_micro", "ce_f1_micro5")
GENERATION_NAMES = {
    "bleu4": "BLEU-4",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr",
    "ce_f1_micro": "CE F1 (14)",
    "ce_f1_micro5": "CE F1 (5)",
}
PAIRED = [
    ("i2t", "recall", 10),
    ("i2t", "balanced_precision", "P"),
    ("t2i", "recall", 10),
    ("t2i", "balanced_precision", "P"),
    ("cxr_clip_i2t", "recall", 10),
    ("label_5x200_i2t", "precision", 10),
    ("label_5x200_t2i", "precision", 10),
]
# The published protocols' columns in summary.md: (task, metric, k, header).
PROTOCOL_COLUMNS = [
    ("cxr_clip_i2t", "recall", 1, "CXR-CLIP i2t R@1"),
    ("cxr_clip_i2t", "recall", 5, "R@5"),
    ("cxr_clip_i2t", "recall", 10, "R@10"),
    ("cxr_clip_i2t", "mean_rank", None, "mean rank"),
    ("label_5x200_i2t", "precision", 1, "5x200 i2t P@1"),
    ("label_5x200_i2t", "precision", 5, "P@5"),
    ("label_5x200_i2t", "precision", 10, "P@10"),
    ("label_5x200_t2i", "precision", 1, "5x200 t2i P@1"),
    ("label_5x200_t2i", "precision", 5, "P@5"),
    ("label_5x200_t2i", "precision", 10, "P@10"),
]
PAIRED_METHOD_TEXT = {
    "query_bootstrap": "paired bootstrap over test queries",
    "seed_query_bootstrap": (
        "seed-and-query bootstrap: each resample draws the training seeds with replacement and "
        "the test queries with replacement (the same queries for every drawn seed), and "
        "averages the per-query differences over the drawn seeds"
    ),
}


@dataclass(frozen=True)
class SummaryInputs:
    """The tables `summarize` reads: every evaluated run's metric, per-query and by-finding tables (in the
    same run order), the rejects, and where their stages ran, X-TRA's and report generation's tables, and
    every run's zero-shot AUC by observation (`zeroshot_auc`)."""

    metrics: Sequence[str]
    queries: Sequence[str]
    rejects: Sequence[str] = ()
    findings: Sequence[str] = ()
    xtra_auc: Sequence[str] = ()
    xtra_paired: Sequence[str] = ()
    generation: str | None = None
    generation_studies: str | None = None
    zeroshot: Sequence[str] = ()


@dataclass(frozen=True)
class SummaryOutputs:
    """The files `summarize` writes: summary.{parquet,csv,md}, the paired tests and, where named, the
    by-finding, X-TRA and zero-shot AUC tables."""

    parquet: str
    csv: str
    md: str
    paired: str
    findings: str | None = None
    xtra: str | None = None
    zeroshot: str | None = None


@dataclass
class Run:
    """One evaluated (backbone, variant, seed): its metric rows and per-query values."""

    backbone: str
    variant: str
    seed: int | None
    metrics: pl.DataFrame
    queries: pl.DataFrame
    findings: pl.DataFrame | None = None

    def values(self, task: str, metric: str, k: int | None) -> pl.DataFrame:
        """The per-query values of one metric, in query order."""
        same_k = pl.col("k").is_null() if k is None else pl.col("k") == k
        return self.queries.filter((pl.col("task") == task) & (pl.col("metric") == metric) & same_k).sort("query")


def read_runs(metric_files: Sequence[str], query_files: Sequence[str], finding_files: Sequence[str] = ()) -> list[Run]:
    """The evaluated runs, in file order (empty metric tables, from an empty gallery, are skipped)."""
    runs = []
    finding_files = list(finding_files) or [None] * len(metric_files)
    for metric_file, query_file, finding_file in zip(metric_files, query_files, finding_files):
        table = read_table(metric_file, "metrics")
        if not table.height:
            continue
        findings = read_table(finding_file, "finding_precision") if finding_file else None
        runs.append(
            Run(
                table["backbone"][0],
                table["variant"][0],
                table["seed"][0],
                table,
                read_table(query_file, "metric_queries"),
                findings,
            )
        )
    return runs


def _seed_groups(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """(backbone, variant) -> its runs, sorted by seed."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.backbone, run.variant), []).append(run)
    return {
        key: sorted(group, key=lambda run: -1 if run.seed is None else run.seed)
        for key, group in sorted(groups.items())
    }


def _per_query_matrix(group: list[Run], task: str, metric: str, k: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(S, Q) per-query values of one metric over a variant's seeds and the query classes, or None
    where a seed lacks them or the seeds' queries differ in number."""
    tables = [run.values(task, metric, k) for run in group]
    if not tables[0].height or any(table.height != tables[0].height for table in tables):
        return None
    return np.stack([table["value"].to_numpy() for table in tables]), tables[0]["abnormal"].to_numpy()


def across_seed_rows(runs: list[Run], n_boot: int, seed: int) -> pl.DataFrame:
    """Mean, sd and seed-and-query 95% interval over the seeds of every variant run with several."""
    rows = []
    for (backbone, variant), group in _seed_groups(runs).items():
        seeds = [run.seed for run in group if run.seed is not None]
        if len(seeds) < 2:
            continue
        stacked = pl.concat([run.metrics for run in group])
        stats = stacked.group_by("task", "metric", "k", maintain_order=True).agg(
            pl.col("value").mean().alias("mean"),
            pl.col("value").std().alias("sd"),
            pl.len().alias("n_seeds"),
            pl.col("n_queries").first(),
        )
        for row in stats.iter_rows(named=True):
            low = high = None
            balanced = row["metric"].startswith("balanced_")
            base = row["metric"].removeprefix("balanced_")
            matrix = None if row["metric"] == "median_rank" else _per_query_matrix(group, row["task"], base, row["k"])
            if matrix is not None:
                values, classes = matrix
                _, low, high = metrics.seed_query_ci(values, n_boot, seed, groups=classes if balanced else None)
            rows.append(
                {
                    "backbone": backbone,
                    "variant": variant,
                    "seed": None,
                    "task": row["task"],
                    "metric": row["metric"],
                    "k": row["k"],
                    "value": row["mean"],
                    "ci_low": low,
                    "ci_high": high,
                    "sd": row["sd"],
                    "n_seeds": row["n_seeds"],
                    "n_queries": row["n_queries"],
                }
            )
    return pl.DataFrame(rows, schema=CONTRACTS["metrics"])


def finding_table(runs: list[Run]) -> pl.DataFrame:
    """Every run's clinical precision by query finding, then each multi-seed variant's mean and sd."""
    per_run = [run.findings for run in runs if run.findings is not None]
    if not per_run:
        return pl.DataFrame(schema=CONTRACTS["finding_precision"])
    table = pl.concat(per_run)
    across = (
        table.filter(pl.col("seed").is_not_null())
        .group_by("backbone", "variant", "task", "finding", "k", maintain_order=True)
        .agg(
            pl.col("value").mean(),
            pl.col("value").std().alias("sd"),
            pl.len().alias("n_seeds"),
            pl.col("n_queries").first(),
        )
        .filter(pl.col("n_seeds") > 1)
    )
    across = across.with_columns(
        seed=pl.lit(None, dtype=pl.Int64), ci_low=pl.lit(None, dtype=pl.Float64), ci_high=pl.lit(None, dtype=pl.Float64)
    )
    return validate_table(pl.concat([table, conform(across, "finding_precision")]), "finding_precision")


def zeroshot_table(paths: Sequence[str]) -> pl.DataFrame:
    """Every run's zero-shot ROC-AUC by observation, then each multi-seed variant's mean and sd over its
    seeds (seed null, no interval), as `finding_table` aggregates."""
    if not paths:
        return pl.DataFrame(schema=CONTRACTS["zeroshot_auc"])
    table = pl.concat([read_table(path, "zeroshot_auc") for path in paths])
    across = (
        table.filter(pl.col("seed").is_not_null())
        .group_by("backbone", "variant", "observation", maintain_order=True)
        .agg(
            pl.col("value").mean(),
            pl.col("value").std().alias("sd"),
            pl.len().alias("n_seeds"),
            pl.col("n_images").first(),
            pl.col("n_positive").first(),
        )
        .filter(pl.col("n_seeds") > 1)
        .with_columns(
            seed=pl.lit(None, dtype=pl.Int64),
            ci_low=pl.lit(None, dtype=pl.Float64),
            ci_high=pl.lit(None, dtype=pl.Float64),
        )
    )
    table = pl.concat([table, conform(across, "zeroshot_auc")])
    return validate_table(table.sort("backbone", "variant", "n_seeds", "seed", nulls_last=False), "zeroshot_auc")


def collapse_notes(summary: pl.DataFrame, backbone: str) -> list[str]:
    """A warning per run of `backbone` whose test image or report embeddings collapsed (evaluate's
    `embeddings` rows, mean pairwise cosine at or above `metrics.COLLAPSED_MEAN_COSINE`); [] when none did."""
    rows = summary.filter(
        (pl.col("backbone") == backbone) & (pl.col("task") == "embeddings") & pl.col("n_seeds").fill_null(1).eq(1)
    )
    notes = []
    for row in rows.sort("variant", "seed", "metric", nulls_last=False).iter_rows(named=True):
        if not metrics.is_collapsed(row["value"]):
            continue
        what = "image" if row["metric"].startswith("image") else "report"
        seed = "" if row["seed"] is None else f" seed {row['seed']}"
        notes.append(
            f"**Warning: collapsed embeddings.** The test {what} embeddings of `{backbone}`/`{row['variant']}`{seed} "
            f"have a mean pairwise cosine of {row['value']:.4f} (at or above {metrics.COLLAPSED_MEAN_COSINE}): "
            "they sit on nearly one point, every query retrieves nearly the same items and the numbers below "
            "say nothing about the method. Check the backbone's preprocessing (image size, mean/std, grayscale "
            "to RGB) or, for the demo backbone, train it longer (`demo_backbone.epochs`)."
        )
    return notes


def _with_precision_k(columns: list[tuple], summary: pl.DataFrame) -> list[tuple]:
    """`columns` with k "P" set to the run's precision k (`evaluate.precision_k`, read from the i2t/t2i
    precision rows); without those rows (mtcxr not evaluated) the "P" columns are left out, not guessed."""
    found = summary.filter((pl.col("metric") == "precision") & pl.col("task").is_in(PROTOCOL_TASKS["mtcxr"]))["k"]
    found = found.drop_nulls().unique().sort().to_list()
    if not found:
        return [(task, metric, k) for task, metric, k in columns if k != "P"]
    return [(task, metric, found[0] if k == "P" else k) for task, metric, k in columns]


def summarize(
    inputs: SummaryInputs,
    outputs: SummaryOutputs,
    n_boot: int = 1000,
    seed: int = 0,
    examples: int = 3,
) -> pl.DataFrame:
    """Concatenate per-run metrics, add across-seed rows, write summary.{parquet,csv,md}, the paired
    tests and the per-finding table; return the summary.

    X-TRA's tables (`evaluate_xtra`), where given, add their macro-AUC rows to the summary (task
    `labels_<method>`, metric `macro_auc`) and every per-label row to `outputs.xtra`. Report
    generation's metrics (`score_generation`), where given, add their headline rows (task
    `generation_<method>`; the baselines have no backbone) and a section with `examples` example
    reports to summary.md. Both are built on the first training seed's heads.
    """
    generation = read_table(inputs.generation, "generation_metrics") if inputs.generation else None
    xtra_auc = pl.concat([pl.read_parquet(path) for path in inputs.xtra_auc]) if inputs.xtra_auc else None
    xtra_paired = pl.concat([pl.read_parquet(path) for path in inputs.xtra_paired]) if inputs.xtra_paired else None
    runs = read_runs(inputs.metrics, inputs.queries, inputs.findings)
    parts = [run.metrics for run in runs] + [across_seed_rows(runs, n_boot, seed)]
    if xtra_auc is not None:
        parts.append(_xtra_summary_rows(xtra_auc))
    if generation is not None:
        parts.append(_generation_summary_rows(generation))
    summary = pl.concat([conform(_with_run_columns(part), "metrics") for part in parts])
    summary = summary.sort("backbone", "variant", "n_seeds", "seed", "task", "metric", "k", nulls_last=False)
    summary = write_table(summary, "metrics", outputs.parquet)
    summary.write_csv(outputs.csv, float_precision=6)
    paired = validate_table(paired_against_baseline(runs, n_boot, seed), "paired")
    paired.write_csv(outputs.paired, float_precision=6)
    findings = finding_table(runs)
    if outputs.findings is not None:
        findings.write_csv(outputs.findings, float_precision=6)
    if outputs.xtra is not None:
        _xtra_table(xtra_auc, xtra_paired).write_csv(outputs.xtra, float_precision=6)
    if outputs.zeroshot is not None:
        zeroshot_table(inputs.zeroshot).write_csv(outputs.zeroshot, float_precision=6)
    rejects = pl.concat([pl.read_parquet(path) for path in inputs.rejects]) if inputs.rejects else pl.DataFrame()
    markdown = markdown_report(summary, paired, rejects, xtra_paired, findings)
    if generation is not None:
        studies = read_table(inputs.generation_studies, "generation_scores") if inputs.generation_studies else None
        markdown += "\n" + "\n".join(_generation_markdown(generation, studies, examples, seed))
    Path(outputs.md).write_text(markdown)
    log.info(
        "summary: %d rows over %d backbone/variant pairs (%d runs); %d rejected items",
        summary.height,
        summary.select("backbone", "variant").n_unique(),
        len(runs),
        rejects.height,
    )
    return summary


def _with_run_columns(part: pl.DataFrame) -> pl.DataFrame:
    """Add the run columns (seed, sd, n_seeds) as nulls to rows that come from outside the retrieval runs."""
    missing = {
        name: pl.lit(None, dtype=CONTRACTS["metrics"][name])
        for name in ("seed", "sd", "n_seeds")
        if name not in part.columns
    }
    return part.with_columns(**missing)


def _xtra_summary_rows(auc: pl.DataFrame) -> pl.DataFrame:
    """X-TRA's macro AUC per method as summary rows (task `labels_<method>`, n_queries = test images)."""
    return auc.filter(pl.col("label") == "macro").select(
        "backbone",
        "variant",
        pl.concat_str([pl.lit("labels_"), pl.col("method")]).alias("task"),
        pl.lit("macro_auc").alias("metric"),
        pl.lit(None, dtype=pl.Int64).alias("k"),
        "value",
        "ci_low",
        "ci_high",
        pl.col("n_images").alias("n_queries"),
    )


def _generation_summary_rows(generation: pl.DataFrame) -> pl.DataFrame:
    """The headline corpus metrics of every generation method as summary rows (task `generation_<method>`)."""
    return generation.filter(pl.col("metric").is_in(GENERATION_HEADLINE) & pl.col("observation").is_null()).select(
        "backbone",
        "variant",
        pl.concat_str([pl.lit("generation_"), pl.col("method")]).alias("task"),
        "metric",
        pl.lit(None, dtype=pl.Int64).alias("k"),
        "value",
        "ci_low",
        "ci_high",
        pl.col("n_studies").alias("n_queries"),
    )


def _generation_markdown(generation: pl.DataFrame, studies: pl.DataFrame | None, examples: int, seed: int) -> list[str]:
    """Report generation by method (metric and 95% CI; paired difference against the random report), then examples."""
    headline = generation.filter(pl.col("metric").is_in(GENERATION_HEADLINE) & pl.col("observation").is_null())
    n = int(headline["n_studies"].max() or 0)
    lines = [
        f"## Report generation by retrieval ({n} test studies, corpus metrics, 95% CI)",
        "",
        "| method | " + " | ".join(GENERATION_NAMES[m] for m in GENERATION_HEADLINE) + " |",
        "|---|" + "---|" * len(GENERATION_HEADLINE),
    ]
    methods = headline.select("backbone", "variant", "method").unique(maintain_order=True).rows()
    for backbone, variant, method in methods:
        part = headline.filter(
            (pl.col("method") == method) & _same(pl.col("backbone"), backbone) & _same(pl.col("variant"), variant)
        )
        cells = []
        for metric in GENERATION_HEADLINE:
            hit = part.filter(pl.col("metric") == metric)
            cells.append(
                f"{_fixed(hit['value'][0])} [{_fixed(hit['ci_low'][0])}, {_fixed(hit['ci_high'][0])}]"
                if hit.height
                else "–"
            )
        name = method if backbone is None else f"{backbone} / {variant} / {method}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Difference against the random train report (paired bootstrap over studies, 95% CI, two-sided p):",
        "",
        "| method | BLEU-4 | CE F1 (14) |",
        "|---|---|---|",
    ]
    for backbone, variant, method in methods:
        if method == "random":
            continue
        cells = []
        for metric in ("bleu4", "ce_f1_micro"):
            hit = headline.filter(
                (pl.col("method") == method)
                & _same(pl.col("backbone"), backbone)
                & _same(pl.col("variant"), variant)
                & (pl.col("metric") == metric)
            )
            row = hit.row(0, named=True) if hit.height else None
            cells.append(
                _paired_cell(
                    {
                        "difference": row["difference"],
                        "ci_low": row["difference_low"],
                        "ci_high": row["difference_high"],
                        "p_value": row["p_value"],
                        "n_boot": row["n_boot"],
                    }
                )
                if row and row["difference"] is not None
                else "–"
            )
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
    chosen = studies.filter(
        (pl.col("method") == best["method"])
        & (pl.col("backbone") == best["backbone"])
        & (pl.col("variant") == best["variant"])
    ).sort("study_id")
    picks = np.sort(np.random.default_rng(seed).choice(chosen.height, min(examples, chosen.height), replace=False))
    # One table row per example: a report's line breaks (MIMIC's have them) would end the row.
    clip = lambda text: " ".join(text.split())[:300] + (" …" if len(" ".join(text.split())) > 300 else "")  # noqa: E731
    lines = [
        f"Examples ({best['backbone']} / {best['variant']} / {best['method']}, the best by CE F1; "
        "studies drawn by seed):",
        "",
        "| study | reference | generated | BLEU-4 | CE F1 |",
        "|---|---|---|---|---|",
    ]
    for row in chosen[picks.tolist()].iter_rows(named=True):
        reference, generated = (clip(row[key]).replace("|", "/") for key in ("reference", "generated"))
        lines.append(
            f"| {row['study_id']} | {reference} | {generated} | {_fixed(row['bleu4'])} | {_fixed(row['ce_f1'])} |"
        )
    return lines + [""]


def _xtra_table(auc: pl.DataFrame | None, paired: pl.DataFrame | None) -> pl.DataFrame:
    """One CSV of X-TRA's per-label and macro AUC by method, then its paired tests against query_only."""
    columns = {
        "backbone": pl.String,
        "variant": pl.String,
        "method": pl.String,
        "label": pl.String,
        "metric": pl.String,
        "value": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "p_value": pl.Float64,
        "n_images": pl.Int64,
        "n_positive": pl.Int64,
    }
    parts = [pl.DataFrame(schema=columns)]
    if auc is not None:
        parts.append(
            auc.with_columns(metric=pl.lit("auc"), p_value=pl.lit(None, dtype=pl.Float64)).select(list(columns))
        )
    if paired is not None:
        parts.append(
            paired.select(
                "backbone",
                "variant",
                pl.concat_str([pl.col("method"), pl.lit(" - "), pl.col("baseline")]).alias("method"),
                pl.lit("macro").alias("label"),
                pl.lit("macro_auc_difference").alias("metric"),
                pl.col("difference").alias("value"),
                "ci_low",
                "ci_high",
                "p_value",
                "n_images",
                pl.lit(None, dtype=pl.Int64).alias("n_positive"),
            ).cast(columns)
        )
    return pl.concat(parts)


def paired_against_baseline(runs: list[Run], n_boot: int, seed: int) -> pl.DataFrame:
    """Paired tests of each variant minus `zeroshot` on the same queries, per backbone, on the PAIRED metrics.

    Every run gets a paired bootstrap over queries (its `seed`); a variant with several seeds also
    gets one across-seed row (seed null) from the seed-and-query bootstrap.
    """
    rows = []
    groups = _seed_groups(runs)
    present = pl.concat([run.metrics for run in runs]) if runs else pl.DataFrame(schema=CONTRACTS["metrics"])
    for (backbone, variant), group in groups.items():
        baseline = groups.get((backbone, BASELINE))
        if variant == BASELINE or baseline is None:
            continue
        for task, metric, k in _with_precision_k(PAIRED, present):
            name, classes_of = metric, None
            if metric.startswith("balanced_"):
                metric, classes_of = metric.removeprefix("balanced_"), True
            a = baseline[0].values(task, metric, k)
            if not a.height:
                continue
            classes = a["abnormal"].to_numpy() if classes_of else None
            common = {
                "backbone": backbone,
                "variant": variant,
                "baseline": BASELINE,
                "task": task,
                "metric": name,
                "k": k,
                "n_boot": n_boot,
                "n_queries": a.height,
            }
            kept = []
            for run in group:
                b = run.values(task, metric, k)
                if b.height != a.height:
                    continue
                kept.append(b["value"].to_numpy())
                test = metrics.paired_bootstrap(a["value"].to_numpy(), kept[-1], n_boot, seed, groups=classes)
                rows.append(
                    {
                        **common,
                        "seed": run.seed,
                        **test,
                        "method": "query_bootstrap",
                        "n_seeds": None if run.seed is None else 1,
                    }
                )
            if len(kept) > 1:
                test = metrics.paired_bootstrap_seeds(
                    a["value"].to_numpy(), np.stack(kept), n_boot, seed, groups=classes
                )
                rows.append({**common, "seed": None, **test, "method": "seed_query_bootstrap", "n_seeds": len(kept)})
    # n_boot travels with each p-value: p = 1 / (n_boot + 1) means "below the bootstrap's resolution".
    return pl.DataFrame(rows, schema=CONTRACTS["paired"])


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
    return (
        f"{_fixed(test['difference'], True)} [{_fixed(test['ci_low'], True)}, {_fixed(test['ci_high'], True)}] "
        f"{_p_text(test['p_value'], test['n_boot'])}"
    )


def _cell(summary: pl.DataFrame, backbone: str, variant: str, task: str, metric: str, k: int | None) -> str:
    """One pivot cell of the headline rows: "mean ± sd" across seeds, or "value [low, high]" of one run."""
    match = summary.filter(
        (pl.col("backbone") == backbone)
        & (pl.col("variant") == variant)
        & (pl.col("task") == task)
        & (pl.col("metric") == metric)
        & (pl.col("k").is_null() if k is None else pl.col("k") == k)
    )
    if not match.height or match["value"][0] is None or np.isnan(match["value"][0]):
        return "–"
    row = match.row(0, named=True)
    digits = 1 if metric.endswith("rank") else 3
    value = f"{row['value']:.1f}" if digits == 1 else _fixed(row["value"])
    if (row["n_seeds"] or 1) > 1:
        sd = f"{row['sd']:.1f}" if digits == 1 else f"{row['sd']:.3f}"
        return f"{value} ± {sd}"
    if row["ci_low"] is None:
        return value
    low, high = ((f"{row[b]:.1f}" if digits == 1 else _fixed(row[b])) for b in ("ci_low", "ci_high"))
    return f"{value} [{low}, {high}]"


def _pivot(summary: pl.DataFrame, backbone: str, columns: list[tuple], headers: list[str]) -> list[str]:
    """A variants x columns Markdown table of the headline rows; [] when no column has a value."""
    part = summary.filter(pl.col("backbone") == backbone)
    wanted = pl.any_horizontal([(pl.col("task") == t) & (pl.col("metric") == m) for t, m, _ in columns])
    if not part.filter(wanted).height:
        return []
    variants = part.filter(wanted)["variant"].unique().to_list()
    variants.sort(key=lambda v: (v != BASELINE, v))
    lines = ["| variant | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
    for variant in variants:
        lines.append(
            f"| {variant} | " + " | ".join(_cell(part, backbone, variant, *column) for column in columns) + " |"
        )
    return lines + [""]


def _seed_note(summary: pl.DataFrame, backbone: str) -> str:
    n_seeds = summary.filter(pl.col("backbone") == backbone)["n_seeds"].max() or 1
    if n_seeds > 1:
        return (
            f"Trained variants: mean ± standard deviation over {n_seeds} training seeds (per-seed rows and "
            "their 95% intervals are in `summary.csv`); untrained: value [95% CI over test queries]."
        )
    return "Values with 95% bootstrap confidence intervals over test queries."


ZEROSHOT_TASK = "zeroshot_classification"
ZEROSHOT_METRICS = ("macro_auc", "accuracy_5x200")


def _zeroshot_markdown(summary: pl.DataFrame) -> list[str]:
    """Zero-shot classification per backbone and variant: macro ROC-AUC and 5x200 accuracy, "mean ± sd" over
    the seeds of a variant trained with several, else "value [95% CI]"."""
    rows = headline_rows(summary.filter(pl.col("task") == ZEROSHOT_TASK))
    if not rows.height:
        return []
    n_seeds = rows["n_seeds"].max() or 1
    spread = (
        f"Trained variants: mean ± sd over {n_seeds} training seeds (per-seed rows with their 95% CIs in "
        "`summary.csv`); untrained: value [95% CI]."
        if n_seeds > 1
        else "Values with 95% bootstrap CIs."
    )
    images = rows.filter(pl.col("metric") == "macro_auc")["n_queries"].max()
    lines = [
        "## Zero-shot classification (text prompts)",
        "",
        "Each test study's first frontal image"
        + (f" ({images} images)" if images else "")
        + " is scored per CheXpert observation (No Finding aside) by its cosine similarity to the observation's "
        "positive prompts minus that to its negative ones (`evaluate.zeroshot_classification`; CheXzero's "
        '"{finding}" / "no {finding}" by default). Macro ROC-AUC over the observations with both classes; '
        "5×200 accuracy: the share of the label_5x200 studies whose class is the one of the five with the most "
        f"similar positive prompts. {spread} Per observation: `zeroshot_auc.csv`, `figures/zeroshot_auc.png`.",
        "",
        "| backbone | variant | macro AUC | 5×200 accuracy |",
        "|---|---|---|---|",
    ]
    for backbone in rows["backbone"].unique().sort().to_list():
        variants = rows.filter(pl.col("backbone") == backbone)["variant"].unique().to_list()
        for variant in sorted(variants, key=lambda v: (v != BASELINE, v)):
            cells = [_cell(rows, backbone, variant, ZEROSHOT_TASK, metric, None) for metric in ZEROSHOT_METRICS]
            lines.append(f"| {backbone} | {variant} | " + " | ".join(cells) + " |")
    return lines + [""]


def _xtra_markdown(summary: pl.DataFrame, paired: pl.DataFrame | None) -> list[str]:
    """X-TRA's macro AUC by method, with the paired difference against query_only, per backbone and variant."""
    rows = summary.filter(pl.col("task").str.starts_with("labels_") & (pl.col("metric") == "macro_auc"))
    if not rows.height:
        return []
    lines = [
        "## X-TRA: multi-label classification (macro ROC-AUC over the test images, 95% CI)",
        "",
        "| backbone | variant | method | macro AUC | vs query_only |",
        "|---|---|---|---|---|",
    ]
    for row in rows.sort("backbone", "variant", "task").iter_rows(named=True):
        method = row["task"].removeprefix("labels_")
        test = None
        if paired is not None:
            hit = paired.filter(
                (pl.col("backbone") == row["backbone"])
                & (pl.col("variant") == row["variant"])
                & (pl.col("method") == method)
            )
            test = hit.row(0, named=True) if hit.height else None
        value = f"{_fixed(row['value'])} [{_fixed(row['ci_low'])}, {_fixed(row['ci_high'])}]"
        lines.append(
            f"| {row['backbone']} | {row['variant']} | {method} | {value} | {_paired_cell(test) if test else '–'} |"
        )
    return lines + [""]


def markdown_report(
    summary: pl.DataFrame,
    paired: pl.DataFrame,
    rejects: pl.DataFrame,
    xtra_paired: pl.DataFrame | None = None,
    findings: pl.DataFrame | None = None,
) -> str:
    """A pivot per backbone with variants as rows and headline metrics as columns, then the paired
    tests, the published protocols, clinical precision by finding, X-TRA and the rejects."""
    lines = [
        "# mtcxr results",
        "",
        "`balanced_precision` is the mean of the normal-query and abnormal-query "
        "Precision@k; relevance is having the query's normal/abnormal status. Every number is in `summary.csv`.",
        "",
    ]
    headline, paired_columns = _with_precision_k(HEADLINE, summary), _with_precision_k(PAIRED, summary)
    headers = [f"{task} {metric}" + (f"@{k}" if k is not None else "") for task, metric, k in headline]
    shown = headline_rows(summary)
    retrieval = summary.filter(~pl.col("task").str.starts_with("generation_"))
    for backbone in retrieval["backbone"].drop_nulls().unique().sort().to_list():
        lines += [f"## Backbone `{backbone}`", "", _seed_note(summary, backbone), ""]
        for note in collapse_notes(summary, backbone):
            log.warning("%s", note.replace("**", "").replace("`", ""))
            lines += [note, ""]
        missing = missing_protocol_note(
            summary,
            backbone,
            "mtcxr's own retrieval metrics (i2t and t2i Recall@K, Precision@k, clinical precision by query finding)",
            verb="compute them",
            markdown=True,
        )
        own = [i for i, (task, _, _) in enumerate(headline) if not missing or task not in PROTOCOL_TASKS["mtcxr"]]
        lines += _pivot(shown, backbone, [headline[i] for i in own], [headers[i] for i in own])
        if missing:
            lines += [missing, ""]
        lines += _paired_markdown(paired.filter(pl.col("backbone") == backbone), paired_columns)
        protocol = _pivot(shown, backbone, [c[:3] for c in PROTOCOL_COLUMNS], [c[3] for c in PROTOCOL_COLUMNS])
        if protocol:
            lines += [
                "### Published protocols",
                "",
                "CXR-CLIP's image→text protocol (one frontal image per study, "
                "reports deduplicated by exact text) and the label-based 5×200 protocol (class-hit precision); "
                "README, Comparing with published numbers.",
                "",
            ] + protocol
        if findings is not None:
            lines += _finding_markdown(findings.filter(pl.col("backbone") == backbone))
    lines += _zeroshot_markdown(summary)
    lines += _xtra_markdown(summary, xtra_paired)
    if rejects.height:
        counts = rejects.group_by("stage", "reason").len().sort("len", descending=True)
        lines += [f"## Rejected items: {rejects.height}", "", "| stage | reason | count |", "|---|---|---|"]
        lines += [
            f"| {row['stage']} | {row['reason']} | {row['len']} |" for row in counts.head(20).iter_rows(named=True)
        ]
    else:
        lines += ["No item was rejected."]
    return "\n".join(lines) + "\n"


def _paired_markdown(tests: pl.DataFrame, columns: list[tuple]) -> list[str]:
    """The paired table of one backbone: across-seed rows where they exist, else each variant's one run."""
    if not tests.height:
        return []
    most = pl.col("n_seeds").fill_null(1).max().over("variant", "task", "metric", "k")
    tests = tests.filter(pl.col("n_seeds").fill_null(1) == most)
    columns = [c for c in columns if tests.filter((pl.col("task") == c[0]) & (pl.col("metric") == c[1])).height]
    methods = tests["method"].unique().sort().to_list()
    lines = [
        f"Paired difference against `{BASELINE}` (95% CI, two-sided p; {tests['n_boot'][0]} resamples): "
        + "; ".join(PAIRED_METHOD_TEXT[m] for m in methods)
        + ".",
        "",
        "| variant | " + " | ".join(f"{t} {m}@{k}" for t, m, k in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for variant in tests["variant"].unique().sort().to_list():
        cells = []
        for task, metric, k in columns:
            hit = tests.filter(
                (pl.col("variant") == variant)
                & (pl.col("task") == task)
                & (pl.col("metric") == metric)
                & (pl.col("k") == k)
            )
            cells.append(_paired_cell(hit.row(0, named=True)) if hit.height else "–")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines + [""]


def _finding_markdown(findings: pl.DataFrame) -> list[str]:
    """Image→report clinical precision by query finding: findings as rows, variants as columns."""
    table = headline_rows(findings.filter(pl.col("task") == "i2t"))
    if not table.height:
        return []
    k = table["k"][0]
    variants = sorted(table["variant"].unique().to_list(), key=lambda v: (v != BASELINE, v))
    lines = [
        f"### Clinical precision by query finding (image→report P@{k})",
        "",
        f"Over the test images positive for a finding, the share of the top {k} reports positive for it too "
        "(across-seed mean for trained variants); `figures/finding_precision_<backbone>.png` shows it.",
        "",
        "| finding | queries | " + " | ".join(variants) + " |",
        "|---|---|" + "---|" * len(variants),
    ]
    for finding in table["finding"].unique(maintain_order=True).to_list():
        part = table.filter(pl.col("finding") == finding)
        cells = []
        for variant in variants:
            hit = part.filter(pl.col("variant") == variant)
            cells.append(_fixed(hit["value"][0]) if hit.height else "–")
        lines.append(
            f"| {CHEXPERT_DISPLAY.get(finding, finding)} | {part['n_queries'][0]} | " + " | ".join(cells) + " |"
        )
    return lines + [""]
