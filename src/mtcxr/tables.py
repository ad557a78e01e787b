"""Table contracts between stages (docs/design.md, Table contracts): column names, dtypes and checks.

Every stage writes its tables through `write_table`, which checks them against
the contract here, so a stage can never hand the next one a table of the wrong
shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

SPLITS = ("train", "validate", "test")
VIEWS = ("PA", "AP", "LATERAL", "LL", "UNKNOWN")
FRONTAL_VIEWS = ("PA", "AP")

# The 14 CheXpert observations, in CheXpert's order, snake_case -> display name.
CHEXPERT_DISPLAY = {
    "no_finding": "No Finding",
    "enlarged_cardiomediastinum": "Enlarged Cardiomediastinum",
    "cardiomegaly": "Cardiomegaly",
    "lung_opacity": "Lung Opacity",
    "lung_lesion": "Lung Lesion",
    "edema": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "pleural_effusion": "Pleural Effusion",
    "pleural_other": "Pleural Other",
    "fracture": "Fracture",
    "support_devices": "Support Devices",
}
CHEXPERT_LABELS = tuple(CHEXPERT_DISPLAY)
# The observations zero-shot classification scores with text prompts (mtcxr.retrieval.zeroshot): all but No
# Finding, which is the absence of the other 13 rather than a finding (its CheXzero pair would be "no finding"
# against "no no finding") and whose complement the normal/abnormal `classification auc` rows already score.
ZEROSHOT_OBSERVATIONS = tuple(name for name in CHEXPERT_LABELS if name != "no_finding")
LABEL_SOURCES = ("dataset", "extracted")

STUDIES_SCHEMA = {
    "study_id": pl.String,
    "patient_id": pl.String,
    "split": pl.String,
    "findings": pl.String,
    "impression": pl.String,
    "report": pl.String,
    "dataset": pl.String,
}
IMAGES_SCHEMA = {
    "image_id": pl.String,
    "study_id": pl.String,
    "patient_id": pl.String,
    "split": pl.String,
    "view": pl.String,
    "path": pl.String,
    "width": pl.Int32,
    "height": pl.Int32,
}
REJECTS_SCHEMA = {
    "item": pl.String,
    "path": pl.String,
    "stage": pl.String,
    "reason": pl.String,
}
LABELS_SCHEMA = {
    "study_id": pl.String,
    **{name: pl.Int8 for name in CHEXPERT_LABELS},
    "abnormal": pl.Boolean,
    "source": pl.String,
}

# A report written for a test study by one generation method (mtcxr.generation.generate): `rank` is the
# chosen candidate's 1-based rank among the retrieved (null for the baselines that retrieve nothing),
# `source_study_id` the train study whose report it is.
GENERATED_SCHEMA = {
    "study_id": pl.String,
    "image_id": pl.String,
    "method": pl.String,
    "backbone": pl.String,
    "variant": pl.String,
    "rank": pl.Int32,
    "source_study_id": pl.String,
    "generated": pl.String,
    "reference": pl.String,
}
GENERATION_METHODS = ("retrieval", "oracle", "xtra", "random", "most_frequent")
# Per study and method: the texts, per-study scores, the findings the labeler read, and the
# sufficient statistics the bootstrap recomputes corpus BLEU and METEOR from (mtcxr.generation.score).
GENERATION_SCORES_SCHEMA = {
    "study_id": pl.String,
    "backbone": pl.String,
    "variant": pl.String,
    "method": pl.String,
    "generated": pl.String,
    "reference": pl.String,
    **{f"bleu{n}": pl.Float64 for n in range(1, 5)},
    "meteor": pl.Float64,
    "rouge_l": pl.Float64,
    "cider": pl.Float64,
    "ce_f1": pl.Float64,
    "reference_positive": pl.List(pl.String),
    "generated_positive": pl.List(pl.String),
    "bleu_guess": pl.List(pl.Int64),
    "bleu_correct": pl.List(pl.Int64),
    "test_length": pl.Int64,
    "reference_length": pl.Int64,
    "meteor_stats": pl.List(pl.Float64),
}
# One corpus metric of one method: value, 95% bootstrap CI, and the paired difference against the
# random-report baseline (null on the baseline's own rows); `observation` for per-finding efficacy.
GENERATION_METRICS_SCHEMA = {
    "backbone": pl.String,
    "variant": pl.String,
    "method": pl.String,
    "metric": pl.String,
    "observation": pl.String,
    "value": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "n_studies": pl.Int64,
    "difference": pl.Float64,
    "difference_low": pl.Float64,
    "difference_high": pl.Float64,
    "p_value": pl.Float64,
    "n_boot": pl.Int64,
}

# Retrieval metrics (mtcxr.retrieval.evaluate, mtcxr.summary.summarize): one row per number. `seed` is the head's
# training seed (null for an untrained variant and for across-seed rows); an across-seed row has
# `n_seeds` > 1, the mean over seeds in `value` and their standard deviation in `sd`.
METRICS_SCHEMA = {
    "backbone": pl.String,
    "variant": pl.String,
    "seed": pl.Int64,
    "task": pl.String,
    "metric": pl.String,
    "k": pl.Int64,
    "value": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "sd": pl.Float64,
    "n_seeds": pl.Int64,
    "n_queries": pl.Int64,
}
# The per-query values behind each mean metric, for the paired tests; `query` numbers the queries of a task.
METRIC_QUERIES_SCHEMA = {
    "task": pl.String,
    "metric": pl.String,
    "k": pl.Int64,
    "query": pl.Int64,
    "abnormal": pl.Boolean,
    "value": pl.Float64,
}
# A variant minus the baseline on the same queries (mtcxr.summary.summarize): per seed, and across seeds
# (seed null) with the method that resampled seeds and queries named in `method`.
PAIRED_SCHEMA = {
    "backbone": pl.String,
    "variant": pl.String,
    "seed": pl.Int64,
    "baseline": pl.String,
    "task": pl.String,
    "metric": pl.String,
    "k": pl.Int64,
    "difference": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "p_value": pl.Float64,
    "method": pl.String,
    "n_boot": pl.Int64,
    "n_seeds": pl.Int64,
    "n_queries": pl.Int64,
}
PAIRED_METHODS = ("query_bootstrap", "seed_query_bootstrap")
# Clinical precision by query finding (mtcxr.retrieval.evaluate): over the test queries positive for `finding`,
# the fraction of the top k retrieved items positive for it too.
FINDING_PRECISION_SCHEMA = {
    "backbone": pl.String,
    "variant": pl.String,
    "seed": pl.Int64,
    "task": pl.String,
    "finding": pl.String,
    "k": pl.Int64,
    "value": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "sd": pl.Float64,
    "n_seeds": pl.Int64,
    "n_queries": pl.Int64,
}
# Zero-shot classification's ROC-AUC by observation (mtcxr.retrieval.evaluate, one table per run; summarize
# gathers them with across-seed rows: mean and sd over seeds, no interval). Only observations with both
# classes among the test images have a row; `n_images` counts the images scored for it (uncertain ones left
# out under `ignore`), `n_positive` the positives among them.
ZEROSHOT_AUC_SCHEMA = {
    "backbone": pl.String,
    "variant": pl.String,
    "seed": pl.Int64,
    "observation": pl.String,
    "value": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "sd": pl.Float64,
    "n_seeds": pl.Int64,
    "n_images": pl.Int64,
    "n_positive": pl.Int64,
}

# Per CheXpert observation, the dataset's labels against the extracted ones (mtcxr.labels.extract): counts,
# raw and exact agreement, precision/recall/F1 with the dataset as reference, Cohen's kappa (null where undefined).
AGREEMENT_SCHEMA = {
    "observation": pl.String,
    "display_name": pl.String,
    "n": pl.Int64,
    "dataset_positive": pl.Int64,
    "extracted_positive": pl.Int64,
    "agreement": pl.Float64,
    "exact_agreement": pl.Float64,
    "precision": pl.Float64,
    "recall": pl.Float64,
    "f1": pl.Float64,
    "kappa": pl.Float64,
}

CONTRACTS: dict[str, dict[str, pl.DataType]] = {
    "studies": STUDIES_SCHEMA,
    "images": IMAGES_SCHEMA,
    "rejects": REJECTS_SCHEMA,
    "labels": LABELS_SCHEMA,
    "generated": GENERATED_SCHEMA,
    "generation_scores": GENERATION_SCORES_SCHEMA,
    "generation_metrics": GENERATION_METRICS_SCHEMA,
    "metrics": METRICS_SCHEMA,
    "metric_queries": METRIC_QUERIES_SCHEMA,
    "paired": PAIRED_SCHEMA,
    "finding_precision": FINDING_PRECISION_SCHEMA,
    "zeroshot_auc": ZEROSHOT_AUC_SCHEMA,
    "agreement": AGREEMENT_SCHEMA,
}
UNIQUE_KEYS: dict[str, str | tuple[str, ...]] = {
    "studies": "study_id",
    "images": "image_id",
    "labels": "study_id",
    "generated": ("study_id", "method", "backbone", "variant"),
    "generation_scores": ("study_id", "method", "backbone", "variant"),
    "generation_metrics": ("backbone", "variant", "method", "metric", "observation"),
    "metrics": ("backbone", "variant", "seed", "n_seeds", "task", "metric", "k"),
    "metric_queries": ("task", "metric", "k", "query"),
    "paired": ("backbone", "variant", "seed", "task", "metric", "k"),
    "finding_precision": ("backbone", "variant", "seed", "n_seeds", "task", "finding", "k"),
    "zeroshot_auc": ("backbone", "variant", "seed", "n_seeds", "observation"),
    "agreement": "observation",
}
NOT_NULL = {
    "studies": ("study_id", "patient_id", "split", "report", "dataset"),
    "images": ("image_id", "study_id", "patient_id", "split", "view", "path"),
    "rejects": ("item", "stage", "reason"),
    "labels": ("study_id", "abnormal", "source"),
    "generated": ("study_id", "method", "source_study_id", "generated", "reference"),
    "generation_scores": ("study_id", "method", "generated", "reference", "meteor_stats"),
    "generation_metrics": ("method", "metric", "value", "n_studies"),
    "metrics": ("task", "metric", "n_queries"),
    "metric_queries": ("task", "metric", "query", "value"),
    "paired": ("backbone", "variant", "baseline", "task", "metric", "method", "n_boot", "n_queries"),
    "finding_precision": ("backbone", "variant", "task", "finding", "k", "n_queries"),
    "zeroshot_auc": ("backbone", "variant", "observation", "value", "n_images", "n_positive"),
    "agreement": ("observation", "display_name", "n"),
}


def pixels_schema():
    """The Arrow schema of a pixel-cache shard (`data/pixels/shard-{i}.parquet`, mtcxr.data.preprocess):
    one cached grayscale PNG per image. Written in record batches by a pyarrow writer, as the PNG bytes
    of a shard do not fit in memory at once; every column is non-null."""
    import pyarrow as pa  # here: the other stages need not load it

    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("study_id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("view", pa.string(), nullable=False),
            pa.field("width", pa.int32(), nullable=False),
            pa.field("height", pa.int32(), nullable=False),
            pa.field("png", pa.binary(), nullable=False),
        ]
    )


# Columns whose values come from a closed set (besides `split`, checked wherever it appears).
ALLOWED_VALUES: dict[str, list[tuple[str, tuple]]] = {
    "images": [("view", VIEWS)],
    "labels": [(column, (1, 0, -1, None)) for column in CHEXPERT_LABELS] + [("source", LABEL_SOURCES)],
    "generated": [("method", GENERATION_METHODS)],
    "paired": [("method", PAIRED_METHODS)],
    "zeroshot_auc": [("observation", ZEROSHOT_OBSERVATIONS)],
}


class ContractError(ValueError):
    """A table does not match its contract; the message names the column and the fix."""


def empty_table(name: str) -> pl.DataFrame:
    """Return an empty table with the contract's columns and dtypes."""
    return pl.DataFrame(schema=CONTRACTS[name])


def conform(df: pl.DataFrame, name: str) -> pl.DataFrame:
    """Return `df` with exactly the contract's columns, in order, cast to its dtypes."""
    schema = CONTRACTS[name]
    missing = [column for column in schema if column not in df.columns]
    if missing:
        raise ContractError(
            f"{name} table lacks column(s) {missing}; it has {df.columns}. "
            f"The {name} contract (docs/design.md, Table contracts) needs {list(schema)}."
        )
    return df.select([pl.col(column).cast(dtype, strict=True) for column, dtype in schema.items()])


def validate_table(df: pl.DataFrame, name: str) -> pl.DataFrame:
    """Check `df` against the contract `name`; return it conformed, or raise ContractError."""
    df = conform(df, name)
    for column in NOT_NULL[name]:
        nulls = df[column].null_count()
        if nulls:
            raise ContractError(f"{name}.{column} has {nulls} null value(s); it must be set on every row.")
    key = UNIQUE_KEYS.get(name)
    if key is not None:
        columns = [key] if isinstance(key, str) else list(key)
        duplicated = df.filter(pl.struct(columns).is_duplicated())
        if duplicated.height:
            shown = duplicated.select(columns).unique().sort(columns).head(5).rows()
            shown = [row[0] for row in shown] if isinstance(key, str) else shown
            raise ContractError(f"{name}.{'+'.join(columns)} must be unique; duplicated values include {shown}.")
    allowed = [("split", SPLITS)] if "split" in df.columns else []
    allowed += ALLOWED_VALUES.get(name, [])
    for column, values in allowed:
        # Nulls are the NOT_NULL check's concern; here only values outside the set.
        bad = df.filter(~pl.col(column).is_in(list(values)) & pl.col(column).is_not_null())[column].unique().to_list()
        if bad:
            shown = ", ".join("null" if v is None else str(v) for v in values)
            raise ContractError(f"{name}.{column} has values {sorted(bad)}; allowed: {shown}.")
    return df


def write_table(df: pl.DataFrame, name: str, path: str | Path) -> pl.DataFrame:
    """Validate `df` against contract `name` and write it as Parquet; return what was written."""
    df = validate_table(df, name)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path)
    return df


@contextmanager
def table_writer(name: str, path: str | Path) -> Iterator[Callable[[pl.DataFrame], None]]:
    """Yield a function that validates a chunk against contract `name` and appends it to `path` as a row group.

    For tables too large to hold whole: memory holds one chunk. Ids are checked for
    uniqueness within each chunk only; the caller makes them unique across chunks. The
    file appears at `path` only when the block ends without an error.
    """
    import pyarrow.parquet as pq  # here: the other stages need not load it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    writer = None

    def write(chunk: pl.DataFrame) -> None:
        nonlocal writer
        table = validate_table(chunk, name).to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(partial, table.schema, compression="zstd")
        writer.write_table(table)

    try:
        yield write
        if writer is None:
            write(empty_table(name))
        writer.close()
        partial.replace(path)
    finally:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)


def read_table(path: str | Path, name: str) -> pl.DataFrame:
    """Read a Parquet table and check it against contract `name`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {name} table; run the stage that writes it first.")
    return validate_table(pl.read_parquet(path), name)


def abnormal_from_no_finding(no_finding: pl.Expr) -> pl.Expr:
    """A study is abnormal unless No Finding is positive (CheXpert's definition of normal)."""
    return no_finding.fill_null(0) != 1


def headline_rows(df: pl.DataFrame) -> pl.DataFrame:
    """The rows of a `metrics` or `finding_precision` table that stand for each variant: its across-seed
    rows where it was trained with several seeds, else its one run."""
    most = pl.col("n_seeds").fill_null(1).max().over("backbone", "variant")
    return df.filter(pl.col("n_seeds").fill_null(1) == most)
