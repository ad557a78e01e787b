"""Manifest ingest: the planted faults, CSV and Parquet, defaults for absent columns, whole-input errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from conftest import MANIFEST_HEADER, manifest_rows, write_csv

from mtcxr.data.datasets.errors import DatasetError
from mtcxr.data.datasets.manifest import read_manifest
from mtcxr.data.datasets.splits import DEFAULT_FRACTIONS, assign_patient_splits
from mtcxr.tables import validate_table


def rows(table: pl.DataFrame, *columns: str) -> list[tuple]:
    return table.select(columns).rows()


def test_tables_with_planted_faults(manifest_csv: Path):
    result = read_manifest({"manifest": str(manifest_csv)}, "both", 0)
    for name in ("studies", "images", "rejects", "labels"):
        validate_table(getattr(result, name), name)
    assert rows(result.studies, "study_id", "patient_id", "split", "findings", "impression", "report", "dataset") == [
        ("S1", "P1", "train", "Heart normal.", "No acute disease.", "Heart normal. No acute disease.", "manifest"),
        ("S2", "P2", "test", None, "Left effusion.", "Left effusion.", "manifest"),
        ("S5", "P4", "validate", "Cardiomegaly.", "Enlarged heart.", "Cardiomegaly. Enlarged heart.", "manifest"),
        ("S7", "P5", "train", "Lungs clear.", "Normal.", "Lungs clear. Normal.", "manifest"),
    ]
    folder = manifest_csv.parent
    assert rows(result.images, "image_id", "study_id", "patient_id", "split", "view", "path", "width", "height") == [
        ("images/a.png", "S1", "P1", "train", "PA", f"{folder}/images/a.png", 40, 50),
        (f"{folder}/images/c.png", "S2", "P2", "test", "AP", f"{folder}/images/c.png", 30, 30),
        ("images/e.png", "S5", "P4", "validate", "PA", f"{folder}/images/e.png", 64, 48),
        ("images/f.png", "S7", "P5", "train", "PA", f"{folder}/images/f.png", None, None),
    ]
    assert rows(result.rejects, "item", "path", "stage", "reason") == [
        (
            "S4",
            str(manifest_csv),
            "ingest",
            "empty report: no findings or impression text; its 1 image(s) are left out",
        ),
        (
            "S8",
            str(manifest_csv),
            "ingest",
            "rows of this study disagree on findings; give each study one text and one patient; its 2 image(s) are left out",
        ),
        ("S9", str(manifest_csv), "ingest", "no image of a view in dataset.views (PA/AP); its images are UNKNOWN"),
        (
            "images/e.png",
            f"{folder}/images/e.png",
            "ingest",
            f"duplicate image_id in {manifest_csv}: only its first row is used",
        ),
        ("row 4", None, "ingest", f"blank image_path on row 4 of {manifest_csv}"),
    ]
    assert rows(
        result.labels, "study_id", "no_finding", "pleural_effusion", "cardiomegaly", "edema", "abnormal", "source"
    ) == [
        ("S1", 1, 0, 0, None, False, "dataset"),
        ("S2", None, 1, None, None, True, "dataset"),
        ("S5", None, None, 1, None, True, "dataset"),
        ("S7", None, None, None, None, True, "dataset"),
    ]


def test_parquet_reads_like_csv(manifest_csv: Path):
    parquet = manifest_csv.with_suffix(".parquet")
    table = (
        pl.read_csv(manifest_csv, infer_schema=False)
        .with_columns(pl.col("Pleural Effusion", "cardiomegaly", "No Finding").replace("", None).cast(pl.Float64))
        .with_columns(pl.col("cardiomegaly").fill_null(float("nan")))
    )  # as pandas writes "not mentioned"
    table.write_parquet(parquet)
    from_csv = read_manifest({"manifest": str(manifest_csv)}, "both", 0)
    from_parquet = read_manifest({"manifest": str(parquet)}, "both", 0)
    assert from_parquet.studies.equals(from_csv.studies)
    assert from_parquet.images.equals(from_csv.images)
    assert from_parquet.labels.equals(from_csv.labels)
    assert from_parquet.rejects["item"].to_list() == from_csv.rejects["item"].to_list()


def test_report_column_and_defaults(tmp_path: Path):
    # Only image_path and report: each image is a study and each study a patient, split seeded.
    manifest = write_csv(
        tmp_path / "m.csv",
        ["Image_Path", "REPORT"],
        [
            ["scans/one.jpg", "FINDINGS: clear.\n  IMPRESSION: normal."],
            ["scans/two.jpg", "Cardiomegaly."],
            ["/data/three.png", " "],
        ],
    )
    result = read_manifest({"manifest": str(manifest), "views": ["UNKNOWN"]}, "impression", 7)
    split = assign_patient_splits(["scans/one.jpg", "scans/two.jpg"], DEFAULT_FRACTIONS, 7)
    assert rows(result.studies, "study_id", "patient_id", "split", "findings", "impression", "report") == [
        ("scans/one.jpg", "scans/one.jpg", split["scans/one.jpg"], None, None, "FINDINGS: clear. IMPRESSION: normal."),
        ("scans/two.jpg", "scans/two.jpg", split["scans/two.jpg"], None, None, "Cardiomegaly."),
    ]
    assert rows(result.images, "image_id", "view", "path") == [
        ("scans/one.jpg", "UNKNOWN", f"{tmp_path}/scans/one.jpg"),
        ("scans/two.jpg", "UNKNOWN", f"{tmp_path}/scans/two.jpg"),
    ]
    assert rows(result.rejects, "item", "reason") == [
        ("/data/three.png", "empty report: the report text is blank; its 1 image(s) are left out")
    ]
    assert result.labels.height == 0


def test_seeded_split_keeps_patients_together(tmp_path: Path):
    body = [[f"{i}.png", f"study{i}", f"patient{i // 3}", "PA", f"Report {i}."] for i in range(30)]
    manifest = write_csv(tmp_path / "m.csv", ["image_path", "study_id", "patient_id", "view", "report"], body)
    result = read_manifest(
        {"manifest": str(manifest), "split_fractions": {"train": 0.5, "validate": 0.2, "test": 0.3}}, "both", 3
    )
    per_patient = result.studies.group_by("patient_id").agg(pl.col("split").n_unique())
    assert per_patient["split"].max() == 1
    assert result.studies.equals(
        read_manifest(
            {"manifest": str(manifest), "split_fractions": {"train": 0.5, "validate": 0.2, "test": 0.3}}, "both", 3
        ).studies
    )


# ---------------------------------------------------------------------------------------------
# Whole-input faults


def rewrite(manifest: Path, header: list[str], body: list[list]) -> Path:
    return write_csv(manifest, header, body)


def test_patient_in_two_splits_is_named(manifest_csv: Path):
    body = manifest_rows(manifest_csv.parent)
    body[2][2] = "P1"  # S2 (test) now belongs to P1, whose S1 is in train
    rewrite(manifest_csv, MANIFEST_HEADER, body)
    with pytest.raises(DatasetError, match=r"P1 \(test/train\)"):
        read_manifest({"manifest": str(manifest_csv)}, "both", 0)


def test_missing_image_path_column_is_named(manifest_csv: Path):
    rewrite(manifest_csv, ["path", "report"], [["a.png", "text"]])
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['image_path'\]"):
        read_manifest({"manifest": str(manifest_csv)}, "both", 0)


def test_missing_text_columns_are_named(manifest_csv: Path):
    rewrite(manifest_csv, ["image_path", "text"], [["a.png", "text"]])
    with pytest.raises(DatasetError, match="has no report column.*add `report`"):
        read_manifest({"manifest": str(manifest_csv)}, "both", 0)


def test_section_without_its_column_is_named(manifest_csv: Path):
    rewrite(manifest_csv, ["image_path", "impression"], [["a.png", "text"]])
    with pytest.raises(DatasetError, match="text.section is findings but .* has no findings column"):
        read_manifest({"manifest": str(manifest_csv)}, "findings", 0)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("split", "val", r"column 'split' has values \['val'\]; allowed: \['train', 'validate', 'test'\]"),
        ("split", "", r"column 'split' is blank on 1 row\(s\) \(rows \[1\]\)"),
        ("cardiomegaly", "2", r"label column 'cardiomegaly' has values \['2'\]"),
        ("No Finding", "yes", r"label column 'No Finding' has values \['yes'\]"),
    ],
)
def test_bad_values_are_named(manifest_csv: Path, column, value, message):
    body = manifest_rows(manifest_csv.parent)
    body[0][MANIFEST_HEADER.index(column)] = value
    rewrite(manifest_csv, MANIFEST_HEADER, body)
    with pytest.raises(DatasetError, match=message):
        read_manifest({"manifest": str(manifest_csv)}, "both", 0)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({}, "needs dataset.manifest"),
        ({"manifest": "/nonexistent/manifest.csv"}, "does not exist"),
    ],
)
def test_manifest_setting_faults(cfg, message):
    with pytest.raises(DatasetError, match=message):
        read_manifest(cfg, "both", 0)


def test_unknown_format_is_named(tmp_path: Path):
    path = tmp_path / "manifest.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(DatasetError, match="neither CSV"):
        read_manifest({"manifest": str(path)}, "both", 0)


def test_nothing_left_is_an_error(tmp_path: Path):
    manifest = write_csv(tmp_path / "m.csv", ["image_path", "report", "view"], [["a.png", "text", "LATERAL"]])
    with pytest.raises(DatasetError, match="no study of .* survived ingest.*no image of a view in dataset.views"):
        read_manifest({"manifest": str(manifest)}, "both", 0)


@pytest.mark.parametrize(
    ("spelling", "view"),
    [
        ("AP Supine", "AP"),
        ("PA erect", "PA"),
        ("ap semi-erect", "AP"),
        ("AP portable", "AP"),
        ("Portable AP", "AP"),
        ("L", "LATERAL"),
        ("LAT", "LATERAL"),
        ("Lateral", "LATERAL"),
        ("X-table lateral", "LATERAL"),
        ("left lateral", "LL"),
        ("posteroanterior", "PA"),
        ("PA view", "PA"),
        ("", "UNKNOWN"),
        ("unknown", "UNKNOWN"),
    ],
)
def test_real_view_spellings_are_mapped(tmp_path: Path, spelling, view):
    manifest = write_csv(tmp_path / "m.csv", ["image_path", "report", "view"], [["a.png", "Normal chest.", spelling]])
    result = read_manifest({"manifest": str(manifest), "views": ["PA", "AP", "LATERAL", "LL", "UNKNOWN"]}, "both", 0)
    assert rows(result.images, "image_id", "view") == [("a.png", view)]
    assert result.rejects.height == 0


def test_unknown_view_is_a_reject_with_its_value(tmp_path: Path):
    body = [["a.png", "Normal chest.", "AP Supine"], ["b.png", "Effusion.", "Axial"], ["c.png", "Normal.", "PA"]]
    manifest = write_csv(tmp_path / "m.csv", ["image_path", "report", "view"], body)
    result = read_manifest({"manifest": str(manifest)}, "both", 0)
    assert rows(result.images, "image_id", "view") == [("a.png", "AP"), ("c.png", "PA")]
    reasons = dict(zip(result.rejects["item"], result.rejects["reason"]))
    assert len(result.rejects) == 2 and set(result.rejects["item"]) == {"b.png"}
    image_reason = [r for r in result.rejects["reason"] if r.startswith("unknown view")]
    assert image_reason == [
        "unknown view 'Axial': not a chest radiograph view mtcxr knows (PA, AP, LATERAL, LL, UNKNOWN or a spelling "
        "of one, such as AP Supine, PA erect, LAT); correct the view column or leave it blank for UNKNOWN"
    ]
    assert "b.png" in reasons
    assert any(
        r == "no image of a view in dataset.views (PA/AP); its images are AXIAL" for r in result.rejects["reason"]
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is empty \(0 bytes\)"),
        (b"image_path,report\n", r"has a header \(image_path, report\) but no rows"),
        (b"image_path,report\na.png,caf\xe9 normal\n", r"is not UTF-8: line 2 has the byte 0xe9.*iconv -f latin1"),
        (b'image_path,report\na.png,"unterminated\nb.png,x\n', r"cannot be read as a manifest"),
    ],
)
def test_unreadable_manifest_files_are_named(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "manifest.csv"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        read_manifest({"manifest": str(path)}, "both", 0)


def test_without_image_headers_no_image_is_opened(manifest_csv: Path):
    result = read_manifest({"manifest": str(manifest_csv)}, "both", 0, image_headers=False)
    full = read_manifest({"manifest": str(manifest_csv)}, "both", 0)
    assert result.images["width"].null_count() == result.images.height
    assert result.images.drop("width", "height").equals(full.images.drop("width", "height"))
    assert result.rejects.equals(full.rejects)
