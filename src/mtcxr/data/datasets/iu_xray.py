"""Dataset kind `iu_xray`: the Indiana University chest X-ray collection (Open-I) in its Kaggle layout.

Layout under `dataset.root`: `indiana_reports.csv` (uid, MeSH, Problems, image,
indication, comparison, findings, impression), `indiana_projections.csv` (uid,
filename, projection) and the PNGs in `images/images_normalized/` (or `images/`).

Choices, and why:

- **Ids.** A report's `uid` is its study id and, as Open-I links no patients
  across reports, also its patient id: one study per patient. `image_id` is the
  PNG's file name.
- **Split.** The collection has none: a seeded patient-level split with
  `dataset.split_fractions` (`splits.assign_patient_splits`).
- **Views.** `Lateral` is LATERAL. `Frontal` does not say PA or AP, but the
  report's examination line (`image` column: "Xray Chest PA and Lateral", "AP
  portable chest") usually does: a frontal image is AP when that line names AP
  (or portable / supine) and not PA, and PA otherwise. Most IU studies are
  outpatient two-view examinations, whose frontal view is PA by convention (on
  the 3,080 reports here: 2,201 name PA, 54 name only AP, 825 name neither).
  Either way the image counts as frontal, so retrieval's frontal filter keeps it.
- **De-identification.** `x-XXXX` is restored to `x-ray` (the de-identifier
  removed "ray" as if it were a name); every other run of `XXXX` tokens (a date,
  a name, "XXXX, XXXX at XXXX") becomes one `___`, MIMIC-CXR's placeholder, so
  sentences keep their shape ("There are no ___ of a pleural effusion") for the
  encoder and the labeler, and both datasets mark removed text the same way.
- **Labels.** The Kaggle layout ships none (MeSH terms are not CheXpert labels):
  zero label rows; labels come from mtcxr's labeler.
- **Images** are not opened at ingest beyond their headers (for width and
  height); a listed image that is missing stays in the images table and is
  rejected by preprocessing with the reason.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from mtcxr.data.datasets.assembly import (
    IngestResult,
    assemble,
    dataset_options,
    dataset_root,
    header_sizes,
    patient_splits,
    rejects_frame,
    require_columns,
)
from mtcxr.data.datasets.errors import DatasetError
from mtcxr.data.text import check_section, iu_to_placeholder

REPORTS = "indiana_reports.csv"
PROJECTIONS = "indiana_projections.csv"
IMAGE_FOLDERS = ("images/images_normalized", "images")
PROJECTION_VIEWS = {"frontal": "FRONTAL", "lateral": "LATERAL"}
AP_EXAM = r"(?i)\b(AP|anteroposterior|antero-posterior|portable|supine)\b"
PA_EXAM = r"(?i)\b(PA|posteroanterior|postero-anterior)\b"


def deidentified_text(column: str) -> pl.Expr:
    """The column's text with IU's `XXXX` de-identification tokens handled (see the module docstring)."""
    return iu_to_placeholder(pl.col(column))


def read_iu_xray(cfg: dict, text_section: str, seed: int, image_headers: bool = True) -> IngestResult:
    """Read the IU X-ray Kaggle layout under `dataset.root` into the contract tables.

    With `image_headers=False` no image is opened and width and height stay null (the
    workflow's pre-flight check).
    """
    check_section(text_section)
    views, policy = dataset_options(cfg)
    root = dataset_root(cfg, "iu_xray")
    reports_path, projections_path = root / REPORTS, root / PROJECTIONS
    for path in (reports_path, projections_path):
        if not path.is_file():
            raise DatasetError(
                f"{path} does not exist; dataset.root must hold {REPORTS} and {PROJECTIONS} (Kaggle layout)."
            )
    image_dir = next((root / folder for folder in IMAGE_FOLDERS if (root / folder).is_dir()), None)
    if image_dir is None:
        raise DatasetError(f"{root} has no images/images_normalized/ or images/ folder; put the IU X-ray PNGs there.")

    reports = _read_csv(reports_path)
    require_columns(
        reports.columns, ["uid", "findings", "impression"], reports_path, "use the Kaggle layout's indiana_reports.csv."
    )
    projections = _read_csv(projections_path)
    require_columns(
        projections.columns,
        ["uid", "filename", "projection"],
        projections_path,
        "use the Kaggle layout's indiana_projections.csv.",
    )

    exam = pl.col("image") if "image" in reports.columns else pl.lit("", dtype=pl.String)
    studies = reports.filter(pl.col("uid").is_not_null()).select(
        study_id=pl.col("uid"),
        patient_id=pl.col("uid"),
        findings=deidentified_text("findings"),
        impression=deidentified_text("impression"),
        frontal=pl.when(exam.str.contains(AP_EXAM) & ~exam.str.contains(PA_EXAM))
        .then(pl.lit("AP"))
        .otherwise(pl.lit("PA")),
        report_path=pl.lit(str(reports_path)),
    )
    studies = studies.with_columns(split=patient_splits(studies["patient_id"], cfg.get("split_fractions"), seed))

    projection = projections["projection"].str.to_lowercase().fill_null("")
    bad = projection.filter(~projection.is_in(list(PROJECTION_VIEWS))).unique().sort().head(5).to_list()
    if bad:
        raise DatasetError(f"{projections_path}: column 'projection' has values {bad}; allowed: Frontal, Lateral.")
    unnamed = projections.filter(pl.col("filename").is_null() | pl.col("uid").is_null())
    rejects = unnamed.with_row_index("row", offset=1).select(
        rejects_frame(pl.format("{} row {}", pl.lit(PROJECTIONS), pl.col("row")), None, "blank uid or filename")
    )
    images = projections.filter(pl.col("filename").is_not_null() & pl.col("uid").is_not_null()).select(
        image_id=pl.col("filename"),
        study_id=pl.col("uid"),
        projection=pl.col("projection").str.to_lowercase().replace_strict(PROJECTION_VIEWS),
        path=pl.concat_str([pl.lit(str(image_dir)), pl.col("filename")], separator="/"),
    )
    frontal = studies.select("study_id", "frontal")
    images = images.join(frontal, on="study_id", how="left").with_columns(
        view=pl.when(pl.col("projection") == "FRONTAL")
        .then(pl.col("frontal").fill_null("PA"))
        .otherwise(pl.col("projection"))
    )
    widths, heights = header_sizes(images["path"].to_list() if image_headers else [])
    images = images.with_columns(
        width=pl.Series(widths, dtype=pl.Int32) if image_headers else pl.lit(None, dtype=pl.Int32),
        height=pl.Series(heights, dtype=pl.Int32) if image_headers else pl.lit(None, dtype=pl.Int32),
    )
    return assemble(
        studies.drop("frontal"),
        images.select("image_id", "study_id", "view", "path", "width", "height"),
        text_section=text_section,
        views=views,
        images_per_study=policy,
        dataset="iu_xray",
        source=reports_path,
        image_source=projections_path,
        rejects=rejects,
    )


def _read_csv(path: Path) -> pl.DataFrame:
    try:
        table = pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise DatasetError(f"{path} cannot be read as CSV ({error}); re-download the Kaggle files.") from error
    return table.with_columns(
        pl.col(column).str.strip_chars().replace("", None) for column in ("uid", "filename") if column in table.columns
    )
