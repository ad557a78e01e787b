"""IU X-ray (Kaggle layout) ingest: the miniature tree's planted faults, XXXX handling, views, the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import write_csv

from mtcxr.data.datasets.errors import DatasetError
from mtcxr.data.datasets.iu_xray import read_iu_xray
from mtcxr.data.datasets.splits import DEFAULT_FRACTIONS, assign_patient_splits
from mtcxr.data.imaging import load_grayscale
from mtcxr.tables import validate_table


def rows(table: pl.DataFrame, *columns: str) -> list[tuple]:
    return table.select(columns).rows()


def test_tables_with_planted_faults(iu_root: Path):
    result = read_iu_xray({"root": str(iu_root)}, "both", 0)
    for name in ("studies", "images", "rejects", "labels"):
        validate_table(getattr(result, name), name)
    split = assign_patient_splits(["1", "2", "3", "4", "5", "6"], DEFAULT_FRACTIONS, 0)
    assert rows(result.studies, "study_id", "patient_id", "split", "findings", "impression", "report", "dataset") == [
        (
            "1",
            "1",
            split["1"],
            "The heart is normal. There are no ___ of a pleural effusion.",
            "Normal chest x-ray.",
            "The heart is normal. There are no ___ of a pleural effusion. Normal chest x-ray.",
            "iu_xray",
        ),
        (
            "2",
            "2",
            split["2"],
            None,
            "No acute disease, dated ___ at ___.",
            "No acute disease, dated ___ at ___.",
            "iu_xray",
        ),
        (
            "6",
            "6",
            split["6"],
            "Stable cardiomegaly since 4___.",
            "Cardiomegaly.",
            "Stable cardiomegaly since 4___. Cardiomegaly.",
            "iu_xray",
        ),
    ]
    images = f"{iu_root}/images/images_normalized"
    assert rows(result.images, "image_id", "study_id", "patient_id", "split", "view", "path", "width", "height") == [
        ("1_IM-0001-4001.dcm.png", "1", "1", split["1"], "PA", f"{images}/1_IM-0001-4001.dcm.png", 40, 48),
        ("2_IM-0652-1001.dcm.png", "2", "2", split["2"], "AP", f"{images}/2_IM-0652-1001.dcm.png", 32, 36),
        # Listed but absent: kept, so that preprocessing rejects it as a missing file.
        ("6_IM-2192-1001.dcm.png", "6", "6", split["6"], "PA", f"{images}/6_IM-2192-1001.dcm.png", None, None),
    ]
    reports, projections = f"{iu_root}/indiana_reports.csv", f"{iu_root}/indiana_projections.csv"
    assert rows(result.rejects, "item", "path", "stage", "reason") == [
        ("3", reports, "ingest", "empty report: no findings or impression text; its 1 image(s) are left out"),
        ("4", reports, "ingest", "no image of a view in dataset.views (PA/AP); its images are LATERAL"),
        ("5", reports, "ingest", "no image listed for this study"),
        (
            "6_IM-2192-1001.dcm.png",
            f"{images}/6_IM-2192-1001.dcm.png",
            "ingest",
            f"duplicate image_id in {projections}: only its first row is used",
        ),
        (
            "99_IM-9999-1001.dcm.png",
            f"{images}/99_IM-9999-1001.dcm.png",
            "ingest",
            f"no report for its study 99 in {reports}",
        ),
    ]
    assert result.labels.height == 0
    assert result.labels.columns == validate_table(result.labels, "labels").columns


def test_lateral_views_when_asked(iu_root: Path):
    result = read_iu_xray({"root": str(iu_root), "views": ["PA", "AP", "LATERAL"]}, "both", 0)
    assert rows(result.images, "image_id", "view", "width", "height") == [
        ("1_IM-0001-3001.dcm.png", "LATERAL", 48, 40),
        ("1_IM-0001-4001.dcm.png", "PA", 40, 48),
        ("2_IM-0652-1001.dcm.png", "AP", 32, 36),
        ("4_IM-2050-2001.dcm.png", "LATERAL", None, None),
        ("6_IM-2192-1001.dcm.png", "PA", None, None),
    ]
    first = read_iu_xray(
        {"root": str(iu_root), "views": ["LATERAL", "PA", "AP"], "images_per_study": "first"}, "both", 0
    )
    assert rows(first.images, "study_id", "view") == [("1", "LATERAL"), ("2", "AP"), ("4", "LATERAL"), ("6", "PA")]


def test_sections_and_seeded_split(iu_root: Path):
    findings = read_iu_xray({"root": str(iu_root)}, "findings", 0)
    assert findings.studies["study_id"].to_list() == ["1", "6"]
    assert findings.studies["report"].to_list() == [
        "The heart is normal. There are no ___ of a pleural effusion.",
        "Stable cardiomegaly since 4___.",
    ]
    everything_test = read_iu_xray(
        {"root": str(iu_root), "split_fractions": {"train": 0, "validate": 0, "test": 1}}, "both", 0
    )
    assert set(everything_test.studies["split"]) == {"test"}
    again = read_iu_xray({"root": str(iu_root)}, "both", 0)
    assert again.studies.equals(read_iu_xray({"root": str(iu_root)}, "both", 0).studies)


def test_flat_images_folder(iu_root: Path):
    (iu_root / "images" / "images_normalized").rename(iu_root / "flat")
    (iu_root / "images").rmdir()
    (iu_root / "flat").rename(iu_root / "images")
    result = read_iu_xray({"root": str(iu_root)}, "both", 0)
    assert result.images["path"][0] == f"{iu_root}/images/1_IM-0001-4001.dcm.png"
    assert result.images["width"][0] == 40


def test_missing_csv_names_it(iu_root: Path):
    (iu_root / "indiana_projections.csv").unlink()
    with pytest.raises(DatasetError, match=r"indiana_projections\.csv does not exist"):
        read_iu_xray({"root": str(iu_root)}, "both", 0)


def test_missing_column_names_it(iu_root: Path):
    write_csv(iu_root / "indiana_reports.csv", ["uid", "findings", "summary"], [["1", "a", "b"]])
    with pytest.raises(DatasetError, match=r"indiana_reports\.csv lacks column\(s\) \['impression'\]"):
        read_iu_xray({"root": str(iu_root)}, "both", 0)


def test_unknown_projection_names_it(iu_root: Path):
    write_csv(iu_root / "indiana_projections.csv", ["uid", "filename", "projection"], [["1", "a.png", "Oblique"]])
    with pytest.raises(DatasetError, match=r"'projection' has values \['oblique'\]; allowed: Frontal, Lateral"):
        read_iu_xray({"root": str(iu_root)}, "both", 0)


def test_missing_image_folder_names_it(iu_root: Path):
    for path in sorted((iu_root / "images").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (iu_root / "images").rmdir()
    with pytest.raises(DatasetError, match="has no images/images_normalized/ or images/ folder"):
        read_iu_xray({"root": str(iu_root)}, "both", 0)


# ---------------------------------------------------------------------------------------------
# The real IU X-ray subset in ../shared/data/iu_xray


@pytest.mark.realdata
def test_real_reports_and_images(real_iu: Path):
    result = read_iu_xray({"root": str(real_iu), "views": ["PA", "AP", "LATERAL"]}, "both", 0)
    for name in ("studies", "images", "rejects", "labels"):
        validate_table(getattr(result, name), name)
    reports = pl.read_csv(real_iu / "indiana_reports.csv", infer_schema=False)
    projections = pl.read_csv(real_iu / "indiana_projections.csv", infer_schema=False)
    # Every report is a study or a reject; every listed image of a kept study stays, present on disk or not.
    assert result.studies.height + result.rejects.height == reports.height == 3080
    assert set(result.rejects["reason"].str.split(";").list.first()) == {"empty report: no findings or impression text"}
    assert result.images.height == projections.filter(pl.col("uid").is_in(result.studies["study_id"].implode())).height
    assert dict(result.images.group_by("view").len().rows()) == {"PA": 2981, "AP": 54, "LATERAL": 2894}
    assert not result.studies["report"].str.contains("XXXX").any()
    present = result.images.filter(pl.col("width").is_not_null())
    assert rows(present, "image_id", "view", "width", "height") == [
        ("1000_IM-0003-1001.dcm.png", "PA", 2048, 2496),
        ("1000_IM-0003-2001.dcm.png", "LATERAL", 2048, 2496),
        ("1000_IM-0003-3001.dcm.png", "PA", 2048, 2496),
        ("1001_IM-0004-1001.dcm.png", "PA", 2160, 2048),
    ]
    assert (real_iu / "images" / "1001_IM-0004-1002.dcm.png").exists() is False
    assert "1001_IM-0004-1002.dcm.png" in result.images["image_id"].to_list()
    frontal_only = read_iu_xray({"root": str(real_iu)}, "both", 0)
    assert set(frontal_only.images["view"]) == {"PA", "AP"}


@pytest.mark.realdata
def test_real_images_decode(real_iu: Path):
    paths = sorted((real_iu / "images").glob("*.png"))
    assert len(paths) == 5
    for path in paths:
        image = load_grayscale(path, 256)
        assert image.mode == "L"
        assert min(image.size) == 256
        assert 20 < np.asarray(image).mean() < 235, path.name
