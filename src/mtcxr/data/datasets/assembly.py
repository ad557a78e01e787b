"""The assembly step every real-dataset reader ends with, and the names the readers share.

A reader turns its layout into one row per study and one row per image; `assemble`
applies the shared rules, so MIMIC-CXR, IU X-ray and manifests reject, filter and
split in exactly the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mtcxr.data.datasets.errors import DatasetError
from mtcxr.data.datasets.splits import DEFAULT_FRACTIONS, SplitLeakError, assign_patient_splits, check_split_hygiene
from mtcxr.data.imaging import image_size
from mtcxr.data.text import section_expr
from mtcxr.tables import (
    CHEXPERT_DISPLAY,
    CHEXPERT_LABELS,
    VIEWS,
    abnormal_from_no_finding,
    conform,
    empty_table,
)

log = logging.getLogger(__name__)

STAGE = "ingest"
IMAGES_PER_STUDY = ("all", "first")
DEFAULT_VIEWS = ("PA", "AP")
HEADER_THREADS = 8  # header reads are I/O-bound: a few threads hide file-system latency


@dataclass
class IngestResult:
    """What a dataset reader returns: the four tables of the contracts (docs/design.md, Table contracts) before they are written."""

    studies: pl.DataFrame
    images: pl.DataFrame
    rejects: pl.DataFrame
    labels: pl.DataFrame

    @classmethod
    def empty(cls) -> IngestResult:
        return cls(*(empty_table(name) for name in ("studies", "images", "rejects", "labels")))


def dataset_options(cfg: dict) -> tuple[list[str], str]:
    """Return the validated (`dataset.views`, `dataset.images_per_study`) of a dataset config."""
    views = cfg.get("views") or list(DEFAULT_VIEWS)
    if isinstance(views, str):
        views = [views]
    bad = [view for view in views if view not in VIEWS]
    if bad:
        raise DatasetError(f"dataset.views has {bad}; allowed: {list(VIEWS)}. Fix dataset.views in the config.")
    policy = cfg.get("images_per_study", "all")
    if policy not in IMAGES_PER_STUDY:
        raise DatasetError(f"dataset.images_per_study is {policy!r}; choose one of {list(IMAGES_PER_STUDY)}.")
    return list(views), policy


def dataset_root(cfg: dict, kind: str) -> Path:
    """Return `dataset.root` as an existing folder, or raise DatasetError saying what to set."""
    if not cfg.get("root"):
        raise DatasetError(f"dataset.kind {kind} needs dataset.root: the folder that holds the {kind} files.")
    root = Path(cfg["root"]).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset.root {root} is not a folder; point dataset.root at the {kind} download.")
    return root


def require_columns(columns: Sequence[str], required: Sequence[str], path: Path | str, fix: str) -> None:
    """Raise DatasetError naming the file and the first missing column."""
    missing = [column for column in required if column not in columns]
    if missing:
        raise DatasetError(f"{path} lacks column(s) {missing} (it has {list(columns)}); {fix}")


def patient_splits(patient_ids: pl.Series, fractions: dict | None, seed: int) -> pl.Expr:
    """An expression mapping `patient_id` to its seeded split (splits.assign_patient_splits)."""
    mapping = assign_patient_splits(patient_ids.unique().to_list(), fractions or DEFAULT_FRACTIONS, seed)
    return pl.col("patient_id").replace_strict(mapping, return_dtype=pl.String)


def check_splits(table: pl.DataFrame, source: Path | str) -> None:
    """Raise DatasetError naming the patients of `source` that appear in more than one split."""
    try:
        check_split_hygiene(table, str(source))
    except SplitLeakError as error:
        raise DatasetError(str(error)) from error


def header_sizes(paths: Sequence[str]) -> tuple[list[int | None], list[int | None]]:
    """Return (widths, heights) read from image headers; None where the file is missing or unreadable."""
    with ThreadPoolExecutor(HEADER_THREADS) as pool:
        sizes = list(pool.map(image_size, paths))
    return [size[0] if size else None for size in sizes], [size[1] if size else None for size in sizes]


def labels_from_columns(table: pl.DataFrame, source: Path | str) -> pl.DataFrame | None:
    """Return the labels contract (source "dataset") from `study_id` + CheXpert columns, or None if there are none.

    Columns may be named by display name ("Pleural Effusion") or snake_case, in any
    case; values 1, 0, -1 or blank (1.0 / 0.0 / -1.0 in MIMIC's CSVs). Observations
    the table lacks are null (not mentioned).
    """
    by_key = {name.lower(): name for name in CHEXPERT_LABELS}
    by_key.update({display.lower(): name for name, display in CHEXPERT_DISPLAY.items()})
    found = {by_key[column.strip().lower()]: column for column in table.columns if column.strip().lower() in by_key}
    if not found:
        return None
    values = {}
    for name, column in found.items():
        raw = table[column]
        if raw.dtype.is_numeric():
            numbers = raw.cast(pl.Float64).fill_nan(None)  # pandas-written files mark "not mentioned" as NaN
            unreadable = numbers.is_not_null() & ~numbers.is_in([-1.0, 0.0, 1.0])
        else:
            text = raw.cast(pl.String).str.strip_chars().replace("", None)
            numbers = text.cast(pl.Float64, strict=False)
            unreadable = (numbers.is_null() & text.is_not_null()) | (
                numbers.is_not_null() & ~numbers.is_in([-1.0, 0.0, 1.0])
            )
        bad = raw.filter(unreadable).cast(pl.String)
        if bad.len():
            raise DatasetError(
                f"{source}: label column {column!r} has values {bad.unique().sort().head(5).to_list()}; "
                "CheXpert labels are 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned)."
            )
        values[name] = numbers.cast(pl.Int8)
    labels = table.select("study_id").with_columns(
        [
            values[name].alias(name) if name in values else pl.lit(None, dtype=pl.Int8).alias(name)
            for name in CHEXPERT_LABELS
        ]
    )
    labels = labels.with_columns(abnormal=abnormal_from_no_finding(pl.col("no_finding")), source=pl.lit("dataset"))
    return conform(labels, "labels")


def rejects_frame(item: pl.Expr | str, path: pl.Expr | str | None, reason: pl.Expr | str) -> list[pl.Expr]:
    """Select expressions producing rejects-contract rows (stage "ingest"); strings are literals."""
    return [
        _as_expr(item).alias("item"),
        _as_expr(path).alias("path"),
        pl.lit(STAGE).alias("stage"),
        _as_expr(reason).alias("reason"),
    ]


def _as_expr(value: pl.Expr | str | None) -> pl.Expr:
    expr = pl.lit(value, dtype=pl.String) if value is None or isinstance(value, str) else value
    return expr.cast(pl.String)


def _empty_text_reason(text_section: str) -> pl.Expr:
    has_findings, has_impression = pl.col("findings").is_not_null(), pl.col("impression").is_not_null()
    if text_section == "findings":
        hint = (
            pl.when(has_impression)
            .then(pl.lit("; it has an impression: set text.section to impression or both to use it"))
            .otherwise(pl.lit(""))
        )
        return pl.concat_str([pl.lit("empty report: no findings text (text.section: findings)"), hint])
    if text_section == "impression":
        hint = (
            pl.when(has_findings)
            .then(pl.lit("; it has findings: set text.section to findings or both to use them"))
            .otherwise(pl.lit(""))
        )
        return pl.concat_str([pl.lit("empty report: no impression text (text.section: impression)"), hint])
    return pl.lit("empty report: no findings or impression text")


def assemble(
    studies: pl.DataFrame,
    images: pl.DataFrame,
    *,
    text_section: str,
    views: Sequence[str],
    images_per_study: str,
    dataset: str,
    source: Path | str,
    labels: pl.DataFrame | None = None,
    rejects: pl.DataFrame | None = None,
    image_source: Path | str | None = None,
) -> IngestResult:
    """Apply the shared ingest rules to one row per study and one row per image; return the four tables.

    `studies`: study_id, patient_id, split, findings, impression (whitespace-normalised,
    null when absent), optional `report` (used verbatim; otherwise composed from the
    sections by `text.section`), optional `report_path` (shown in rejects) and optional
    `fault` (a reason the reader found: the study is rejected with it). `images`:
    image_id, study_id, view, path, width, height. `rejects`: what the reader rejected
    itself. `source` and `image_source` (default: `source`) name the files that list
    studies and images, for the reasons. The rules:

    1. A repeated study or image id keeps its first row; the others are rejected.
    2. A study with a fault, or whose embedded text is empty, is rejected; its images are
       left out with it (the reason counts them).
    3. An image whose study has no row is rejected.
    4. Images of views outside `dataset.views` are left out (a config choice, logged); a
       study left with no image is rejected, naming the views it has.
    5. `images_per_study: first` keeps one image per study: the first view in
       `dataset.views` order, ties broken by image id.
    6. Splits must be patient-level (DatasetError naming the patients otherwise).

    Every rule only adds a reason column; each table is filtered once, so a
    MIMIC-sized input is copied as few times as possible. The MIMIC-CXR reader applies
    the same steps (`mark_images`, `study_reasons`, `kept_images`, `check_kept`) to its
    studies chunk by chunk, so that their text is never held whole.
    """
    views = list(views)
    images, per_study = mark_images(images, studies["study_id"], views)
    log_views_left_out(images.filter(~pl.col("_duplicate") & ~pl.col("_orphan") & pl.col("fault").is_null()), views)
    studies = study_reasons(studies, per_study, text_section=text_section, views=views, source=source)
    images = images.with_columns(_reason=image_reason(image_source or source, source))
    all_rejects = sorted_rejects(
        [
            *([rejects] if rejects is not None else []),
            rejected(studies, "study_id", "report_path"),
            rejected(images, "image_id", "path"),
        ]
    )
    studies = studies.filter(pl.col("_reason").is_null()).with_columns(dataset=pl.lit(dataset)).sort("study_id")
    check_kept(studies, all_rejects, source)
    images = kept_images(images, studies, views, images_per_study)
    labels = empty_table("labels") if labels is None else labels
    labels = labels.filter(
        pl.col("study_id").is_first_distinct() & pl.col("study_id").is_in(studies["study_id"].implode())
    )
    result = IngestResult(
        studies=conform(studies, "studies"),
        images=conform(images, "images"),
        rejects=all_rejects,
        labels=conform(labels.sort("study_id"), "labels"),
    )
    log_counts(dataset, result.studies.height, result.images.height, result.rejects.height, result.labels.height)
    return result


def mark_images(images: pl.DataFrame, study_ids: pl.Series, views: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return `images` with `_duplicate`, `_orphan` and `fault` (rules 1, 3), and per study `_images`, `_allowed`, `_views`.

    `fault` is a reason the reader found for one image (an unknown view); such an image
    counts among its study's images but not among its allowed ones.

    A caller passing part of the images (the MIMIC reader, chunk by chunk) marks
    `_duplicate` over all of them first; it is kept.
    """
    if "_duplicate" not in images.columns:
        images = images.with_columns(_duplicate=~pl.col("image_id").is_first_distinct())
    if "fault" not in images.columns:
        images = images.with_columns(fault=pl.lit(None, dtype=pl.String))
    images = images.with_columns(_orphan=~pl.col("study_id").is_in(study_ids.implode()))
    per_study = (
        images.filter(~pl.col("_duplicate") & ~pl.col("_orphan"))
        .group_by("study_id")
        .agg(
            _images=pl.len(),
            _allowed=(pl.col("view").is_in(views) & pl.col("fault").is_null()).sum(),
            _views=pl.col("view").unique().sort().str.join(", "),
        )
    )
    return images, per_study


def log_views_left_out(listed: pl.DataFrame, views: list[str]) -> None:
    """Log how many of the `listed` images (not rejected) are of views outside `dataset.views`, by view."""
    outside = listed.filter(~pl.col("view").is_in(views))
    if outside.height:
        counts = ", ".join(f"{view} {n}" for view, n in outside.group_by("view").len().sort("view").rows())
        log.info("left out %d image(s) of views outside dataset.views %s: %s", outside.height, views, counts)


def study_reasons(
    studies: pl.DataFrame, per_study: pl.DataFrame, *, text_section: str, views: list[str], source: Path | str
) -> pl.DataFrame:
    """Return `studies` with `report`, `report_path`, `fault`, image counts and `_reason` (null: kept); rules 1, 2, 4.

    Rule 1 looks only within `studies`: a caller passing part of the studies (the MIMIC
    reader, chunk by chunk) passes studies whose ids are unique.
    """
    empty_reason = _empty_text_reason(text_section)
    if "report" in studies.columns:
        empty_reason = pl.lit("empty report: the report text is blank")
    else:
        studies = studies.with_columns(report=section_expr(text_section))
    if "report_path" not in studies.columns:
        studies = studies.with_columns(report_path=pl.lit(str(source)))
    if "fault" not in studies.columns:
        studies = studies.with_columns(fault=pl.lit(None, dtype=pl.String))
    studies = studies.join(per_study, on="study_id", how="left", maintain_order="left").with_columns(
        pl.col("_images", "_allowed").fill_null(0)
    )
    left_out = (
        pl.when(pl.col("_images") > 0)
        .then(pl.format("; its {} image(s) are left out", pl.col("_images")))
        .otherwise(pl.lit(""))
    )
    return studies.with_columns(
        _reason=pl.when(~pl.col("study_id").is_first_distinct())
        .then(pl.lit(f"duplicate study_id in {source}: only its first row is used"))
        .when(pl.col("fault").is_not_null())
        .then(pl.concat_str([pl.col("fault"), left_out]))
        .when(pl.col("report").is_null())
        .then(pl.concat_str([empty_reason, left_out]))
        .when(pl.col("_images") == 0)
        .then(pl.lit("no image listed for this study"))
        .when(pl.col("_allowed") == 0)
        .then(
            pl.format(
                "no image of a view in dataset.views ({}); its images are {}", pl.lit("/".join(views)), pl.col("_views")
            )
        )
    )


def image_reason(image_source: Path | str, source: Path | str) -> pl.Expr:
    """Why a marked image (`mark_images`) is rejected, null if it is not (rules 1, 3)."""
    return (
        pl.when(pl.col("_duplicate"))
        .then(pl.lit(f"duplicate image_id in {image_source}: only its first row is used"))
        .when(pl.col("_orphan"))
        .then(pl.format("no report for its study {} in {}", pl.col("study_id"), pl.lit(str(source))))
        .when(pl.col("fault").is_not_null())
        .then(pl.col("fault"))
    )


def rejected(table: pl.DataFrame, item: str, path: str) -> pl.DataFrame:
    """The rejects rows of the rows of `table` with a `_reason`."""
    return table.filter(pl.col("_reason").is_not_null()).select(
        rejects_frame(pl.col(item), pl.col(path), pl.col("_reason"))
    )


def sorted_rejects(parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """One rejects table of `parts`, in the contract's columns, sorted by item and reason."""
    return pl.concat([conform(part, "rejects") for part in [empty_table("rejects"), *parts]]).sort("item", "reason")


def check_kept(studies: pl.DataFrame, rejects: pl.DataFrame, source: Path | str) -> None:
    """Raise DatasetError when no study survived or a patient of the kept studies is in two splits (rule 6)."""
    if studies.height == 0:
        common = rejects.group_by("reason").len().sort("len", "reason", descending=[True, False]).head(3).rows()
        raise DatasetError(
            f"no study of {source} survived ingest; most common reasons: {common or 'none (the input has no rows)'}. "
            "Check dataset.views, text.section and the input files."
        )
    check_splits(studies, source)


def kept_images(images: pl.DataFrame, studies: pl.DataFrame, views: list[str], images_per_study: str) -> pl.DataFrame:
    """The images kept (rules 4, 5) with their study's patient and split, sorted by study_id and image_id."""
    images = images.filter(pl.col("_reason").is_null() & pl.col("view").is_in(views)).join(
        studies.select("study_id", "patient_id", "split"), on="study_id", how="inner"
    )
    if images_per_study == "first":
        rank = {view: position for position, view in enumerate(views)}
        images = images.sort(pl.col("view").replace_strict(rank, return_dtype=pl.Int32), "image_id").unique(
            "study_id", keep="first"
        )
    return images.sort("study_id", "image_id")


def log_counts(dataset: str, studies: int, images: int, rejects: int, labels: int) -> None:
    log.info(
        "%s: %d studies, %d images, %d rejected at ingest, %d dataset labels", dataset, studies, images, rejects, labels
    )
