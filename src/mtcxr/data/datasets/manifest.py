"""Dataset kind `manifest`: the user's own CSV or Parquet list of images and reports.

Manifest rules (docs/design.md, Datasets):

- One row per image. Required: `image_path` (absolute, or relative to the
  manifest's folder) and the text, either `report` (taken verbatim as the
  embedded text) or `findings` / `impression` (combined as `text.section` says).
- Optional: `image_id` (default: `image_path` as written), `study_id` (default:
  the image id, i.e. one image per study), `patient_id` (default: the study id,
  i.e. one study per patient), `split` (train / validate / test on every row;
  default: a seeded patient-level split with `dataset.split_fractions`), `view`
  (PA, AP, LATERAL, LL, UNKNOWN, any case; blank or absent means UNKNOWN), and
  any of the 14 CheXpert label columns by display name ("Pleural Effusion") or
  snake_case (`pleural_effusion`) with values 1, 0, -1 or blank.
- Column names match case-insensitively.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl

from mtcxr.data.datasets.assembly import (
    IngestResult,
    assemble,
    check_splits,
    dataset_options,
    header_sizes,
    labels_from_columns,
    patient_splits,
    rejects_frame,
    require_columns,
)
from mtcxr.data.datasets.errors import DatasetError
from mtcxr.data.datasets.views import canonical_view
from mtcxr.data.text import check_section, clean_text
from mtcxr.tables import SPLITS

MANIFEST_COLUMNS = (
    "image_path",
    "image_id",
    "study_id",
    "patient_id",
    "split",
    "view",
    "report",
    "findings",
    "impression",
)


def read_manifest(cfg: dict, text_section: str, seed: int, image_headers: bool = True) -> IngestResult:
    """Read the manifest named by `dataset.manifest` into the contract tables (rules in the module docstring).

    With `image_headers=False` no image is opened and width and height stay null: the
    workflow's pre-flight check reads the manifest this way before any job starts.
    """
    check_section(text_section)
    views, policy = dataset_options(cfg)
    path = _manifest_path(cfg)
    table = _read_manifest_file(path)
    rename = {column: column.strip().lower() for column in table.columns if column.strip().lower() in MANIFEST_COLUMNS}
    table = table.rename(rename)
    require_columns(
        table.columns,
        ["image_path"],
        path,
        "add an image_path column with each image's file, absolute or relative to the manifest's folder.",
    )
    text_columns = [column for column in ("report", "findings", "impression") if column in table.columns]
    if not text_columns:
        raise DatasetError(
            f"{path} has no report column (it has {table.columns}); add `report` (the text to embed) "
            "or `findings` and/or `impression`."
        )
    if "report" not in table.columns and text_section != "both" and text_section not in table.columns:
        other = text_columns[0]
        raise DatasetError(
            f"text.section is {text_section} but {path} has no {text_section} column (it has {other}); "
            f"set text.section: {other} or both, or add a {text_section} column."
        )
    present = [column for column in MANIFEST_COLUMNS if column in table.columns]
    table = table.with_columns(
        [pl.col(column).cast(pl.String).str.strip_chars().replace("", None) for column in present]
    )
    table = table.with_row_index("row", offset=1)

    blank = table.filter(pl.col("image_path").is_null())
    blank_item = pl.coalesce(
        pl.col("image_id") if "image_id" in table.columns else pl.lit(None, dtype=pl.String),
        pl.format("row {}", pl.col("row")),
    )
    rejects = blank.select(
        rejects_frame(blank_item, None, pl.format("blank image_path on row {} of {}", pl.col("row"), pl.lit(str(path))))
    )
    table = table.filter(pl.col("image_path").is_not_null())

    # Absent or blank ids fall back: image -> its path as written, study -> its image, patient -> its study.
    for column, fallback in (("image_id", "image_path"), ("study_id", "image_id"), ("patient_id", "study_id")):
        given = pl.col(column) if column in table.columns else pl.lit(None, dtype=pl.String)
        table = table.with_columns(pl.coalesce(given, pl.col(fallback)).alias(column))
    base = str(path.parent.resolve())
    table = table.with_columns(
        path=pl.when(pl.col("image_path").str.starts_with("/"))
        .then(pl.col("image_path"))
        .otherwise(pl.concat_str([pl.lit(base), pl.col("image_path")], separator="/")),
        split=_splits(table, path, cfg.get("split_fractions"), seed),
    )
    view, fault = _views(table)
    table = table.with_columns(view=view, fault=fault)
    check_splits(table.select("patient_id", "split"), path)
    widths, heights = header_sizes(table["path"].to_list() if image_headers else [])
    table = table.with_columns(
        width=pl.Series(widths, dtype=pl.Int32) if image_headers else pl.lit(None, dtype=pl.Int32),
        height=pl.Series(heights, dtype=pl.Int32) if image_headers else pl.lit(None, dtype=pl.Int32),
    )

    sections = [column for column in ("findings", "impression", "report") if column in table.columns]
    table = table.with_columns([clean_text(column).alias(column) for column in sections])
    per_study = [pl.col(column).first() for column in ("patient_id", "split", *sections)]
    disagree = [pl.col(column).drop_nulls().n_unique().alias(f"_{column}") for column in ("patient_id", *sections)]
    studies = table.group_by("study_id", maintain_order=True).agg(per_study + disagree)
    conflicts = [pl.when(pl.col(f"_{column}") > 1).then(pl.lit(column)) for column in ("patient_id", *sections)]
    studies = studies.with_columns(
        fault=pl.when(pl.concat_str(conflicts, separator=", ", ignore_nulls=True).str.len_chars() > 0)
        .then(
            pl.format(
                "rows of this study disagree on {}; give each study one text and one patient",
                pl.concat_str(conflicts, separator=", ", ignore_nulls=True),
            )
        )
        .otherwise(None),
        report_path=pl.lit(str(path)),
    )
    for column in ("findings", "impression"):
        if column not in studies.columns:
            studies = studies.with_columns(pl.lit(None, dtype=pl.String).alias(column))

    label_rows = table.group_by("study_id", maintain_order=True).first()
    labels = labels_from_columns(label_rows, path)
    return assemble(
        studies,
        table.select("image_id", "study_id", "view", "path", "width", "height", "fault"),
        text_section=text_section,
        views=views,
        images_per_study=policy,
        dataset="manifest",
        source=path,
        labels=labels,
        rejects=rejects,
    )


def _manifest_path(cfg: dict) -> Path:
    if not cfg.get("manifest"):
        raise DatasetError("dataset.kind manifest needs dataset.manifest: the path of your CSV or Parquet manifest.")
    path = Path(cfg["manifest"]).expanduser()
    if not path.is_file():
        raise DatasetError(f"dataset.manifest {path} does not exist; point it at your CSV or Parquet manifest.")
    return path


def _read_manifest_file(path: Path) -> pl.DataFrame:
    """Read a CSV/TSV (gzipped or not) or Parquet manifest, all columns as strings; raise DatasetError with the fix."""
    suffixes = "".join(path.suffixes[-2:]).lower()
    if path.stat().st_size == 0:
        raise DatasetError(f"dataset.manifest {path} is empty (0 bytes); write its header and one row per image.")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pl.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".tsv") or suffixes in (".csv.gz", ".tsv.gz"):
            _check_utf8(path)
            separator = "\t" if ".tsv" in suffixes else ","
            # All strings: ids like 00123 must not become integers.
            table = pl.read_csv(path, infer_schema=False, separator=separator)
        else:
            raise DatasetError(
                f"dataset.manifest {path} is neither CSV (.csv, .csv.gz, .tsv) nor Parquet (.parquet); convert it to one."
            )
    except (pl.exceptions.PolarsError, OSError) as error:
        raise DatasetError(
            f"{path} cannot be read as a manifest ({error}); check that it is a valid CSV or Parquet file."
        ) from error
    if table.height == 0:
        raise DatasetError(
            f"dataset.manifest {path} has a header ({', '.join(table.columns)}) but no rows; add one row per image."
        )
    return table


def _check_utf8(path: Path) -> None:
    """Raise DatasetError naming the line of the first byte that is not UTF-8, and how to convert the file."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                byte = line[error.start : error.start + 1].hex()
                raise DatasetError(
                    f"{path} is not UTF-8: line {number} has the byte 0x{byte} (a latin-1 or Windows-1252 file?). "
                    f"Re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}`, "
                    "and point dataset.manifest at the new file."
                ) from None


def _views(table: pl.DataFrame) -> tuple[pl.Expr, pl.Expr]:
    """(view, fault) expressions: the view mapped from its spelling (datasets.views), and why it is unknown."""
    if "view" not in table.columns:
        return pl.lit("UNKNOWN"), pl.lit(None, dtype=pl.String)
    view = canonical_view(pl.col("view"))
    fault = pl.when(view.is_null()).then(
        pl.format(
            "unknown view {}: not a chest radiograph view mtcxr knows (PA, AP, LATERAL, LL, UNKNOWN or a spelling "
            "of one, such as AP Supine, PA erect, LAT); correct the view column or leave it blank for UNKNOWN",
            pl.col("view").map_elements(repr, return_dtype=pl.String),
        )
    )
    # An unknown view keeps its own spelling, so that its study's reason names it.
    return pl.coalesce(view, pl.col("view").str.to_uppercase()), fault


def _splits(table: pl.DataFrame, path: Path, fractions: dict | None, seed: int) -> pl.Expr:
    if "split" not in table.columns:
        return patient_splits(table["patient_id"], fractions, seed)
    splits = table["split"].str.to_lowercase()
    if splits.null_count():
        rows = table.filter(pl.col("split").is_null())["row"].head(5).to_list()
        raise DatasetError(
            f"{path}: column 'split' is blank on {splits.null_count()} row(s) (rows {rows}); "
            "fill it on every row, or drop the column to get a seeded patient-level split."
        )
    bad = splits.filter(~splits.is_in(list(SPLITS))).unique().sort().head(5).to_list()
    if bad:
        raise DatasetError(f"{path}: column 'split' has values {bad}; allowed: {list(SPLITS)}.")
    return pl.col("split").str.to_lowercase()
