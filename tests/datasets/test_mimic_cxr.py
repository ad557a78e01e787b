"""MIMIC-CXR-JPG ingest: section parsing, the planted faults of the miniature tree, whole-input errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import polars as pl
import pytest
from conftest import MIMIC_FULL, MIMIC_IMPRESSION_ONLY, MIMIC_NO_HEADINGS, write_mimic_tree

from mtcxr.data.datasets.errors import DatasetError
from mtcxr.data.datasets.mimic_cxr import _zip_texts, parse_report_sections, read_mimic_cxr
from mtcxr.tables import validate_table

FULL_FINDINGS = "The lungs are clear. No pleural effusion or pneumothorax."
FULL_IMPRESSION = "No acute cardiopulmonary process."


# ---------------------------------------------------------------------------------------------
# parse_report_sections, one test per report shape


def test_findings_and_impression():
    assert parse_report_sections(MIMIC_FULL) == (FULL_FINDINGS, FULL_IMPRESSION)


def test_impression_only_leaves_findings_empty():
    assert parse_report_sections(MIMIC_IMPRESSION_ONLY) == (None, "Small left pleural effusion.")


def test_findings_only_leaves_impression_empty():
    assert parse_report_sections(" INDICATION: cough.\n FINDINGS: Mild edema.\n") == ("Mild edema.", None)


def test_no_headings_takes_the_last_paragraph_as_impression():
    assert parse_report_sections(MIMIC_NO_HEADINGS) == (None, "No focal consolidation.")


def test_plain_text_is_the_impression():
    assert parse_report_sections("Heart size normal.\nLungs clear.") == (None, "Heart size normal. Lungs clear.")


def test_trailing_administrative_paragraphs_are_skipped():
    text = "FINAL REPORT\nThe lungs are clear.\n\nNOTIFICATION: Dr. ___ was paged at 10:30.\n\nRECOMMENDATION(S): CT."
    assert parse_report_sections(text) == (None, "The lungs are clear.")


def test_other_heading_label_is_removed_in_the_fallback():
    text = " INDICATION: dyspnea.\n\n PA AND LATERAL VIEWS OF THE CHEST: Mild edema."
    assert parse_report_sections(text) == (None, "Mild edema.")


def test_sections_end_at_the_next_heading_and_repeat_joins():
    text = "FINDINGS: Clear.\nNOTIFICATION: called.\nIMPRESSION: Normal.\nADDENDUM: x\nIMPRESSION: Unchanged."
    assert parse_report_sections(text) == ("Clear.", "Normal. Unchanged.")


def test_headings_in_any_case_and_conclusion():
    assert parse_report_sections("Findings: clear lungs.\nConclusion: normal.") == ("clear lungs.", "normal.")


def test_combined_heading_gives_both():
    assert parse_report_sections("FINDINGS AND IMPRESSION: Lungs clear.") == ("Lungs clear.", "Lungs clear.")


def test_times_in_text_are_not_headings():
    assert parse_report_sections("IMPRESSION: Called at 10:30 AT 11:45 today.") == (
        None,
        "Called at 10:30 AT 11:45 today.",
    )


@pytest.mark.parametrize(
    "text", ["", "   \n\n  ", "                                 FINAL REPORT\n", "FINDINGS:\n\nIMPRESSION:\n"]
)
def test_empty_reports(text):
    assert parse_report_sections(text) == (None, None)


# ---------------------------------------------------------------------------------------------
# read_mimic_cxr on the miniature tree


def rows(table: pl.DataFrame, *columns: str) -> list[tuple]:
    return table.select(columns).rows()


def test_tables_with_planted_faults(mimic_root: Path):
    result = read_mimic_cxr({"root": str(mimic_root)}, "both", 0)
    for name in ("studies", "images", "rejects", "labels"):
        validate_table(getattr(result, name), name)
    assert rows(result.studies, "study_id", "patient_id", "split", "findings", "impression", "report", "dataset") == [
        (
            "s50000001",
            "10000032",
            "train",
            FULL_FINDINGS,
            FULL_IMPRESSION,
            f"{FULL_FINDINGS} {FULL_IMPRESSION}",
            "mimic_cxr",
        ),
        (
            "s50000002",
            "10000032",
            "train",
            None,
            "Small left pleural effusion.",
            "Small left pleural effusion.",
            "mimic_cxr",
        ),
        ("s50000003", "10000033", "validate", None, "No focal consolidation.", "No focal consolidation.", "mimic_cxr"),
        ("s50000007", "11000002", "test", "Mild pulmonary edema.", None, "Mild pulmonary edema.", "mimic_cxr"),
    ]
    files = f"{mimic_root}/files"
    assert rows(result.images, "image_id", "study_id", "patient_id", "split", "view", "path", "width", "height") == [
        ("d01", "s50000001", "10000032", "train", "PA", f"{files}/p10/p10000032/s50000001/d01.jpg", 2544, 3056),
        ("d03", "s50000002", "10000032", "train", "AP", f"{files}/p10/p10000032/s50000002/d03.jpg", 3050, 2539),
        ("d04", "s50000003", "10000033", "validate", "PA", f"{files}/p10/p10000033/s50000003/d04.jpg", 2000, 2000),
        ("d10", "s50000007", "11000002", "test", "PA", f"{files}/p11/p11000002/s50000007/d10.jpg", 2000, 2000),
    ]
    archive = f"{mimic_root}/mimic-cxr-reports.zip"
    assert rows(result.rejects, "item", "path", "stage", "reason") == [
        (
            "d09",
            f"{files}/p11/p11000002/s50000007/d09.jpg",
            "ingest",
            f"duplicate image_id in {mimic_root}/mimic-cxr-2.0.0-metadata.csv.gz: only its first row is used",
        ),
        ("d11", f"{files}/p11/p11000002/s50000007/d11.jpg", "ingest", "no row in mimic-cxr-2.0.0-split.csv"),
        (
            "s50000004",
            f"{archive}:files/p11/p11000001/s50000004.txt",
            "ingest",
            "report missing from mimic-cxr-reports.zip; its 1 image(s) are left out",
        ),
        (
            "s50000005",
            f"{archive}:files/p11/p11000001/s50000005.txt",
            "ingest",
            "empty report: no findings or impression text; its 1 image(s) are left out",
        ),
        (
            "s50000006",
            f"{archive}:files/p11/p11000002/s50000006.txt",
            "ingest",
            "no image of a view in dataset.views (PA/AP); its images are LATERAL, LL",
        ),
    ]
    assert rows(
        result.labels,
        "study_id",
        "no_finding",
        "pleural_effusion",
        "edema",
        "cardiomegaly",
        "pneumonia",
        "abnormal",
        "source",
    ) == [
        ("s50000001", 1, None, None, None, None, False, "dataset"),
        ("s50000002", None, 1, -1, 0, None, True, "dataset"),
        ("s50000003", None, None, None, None, None, True, "dataset"),
    ]


def test_extracted_folder_and_plain_csvs_read_the_same(tmp_path: Path):
    zipped = read_mimic_cxr({"root": str(write_mimic_tree(tmp_path / "a"))}, "both", 0)
    folder_root = write_mimic_tree(tmp_path / "b", reports="folder", gz=False)
    extracted = read_mimic_cxr({"root": str(folder_root)}, "both", 0)
    assert extracted.studies.equals(zipped.studies)
    assert extracted.labels.equals(zipped.labels)
    assert extracted.images["image_id"].to_list() == zipped.images["image_id"].to_list()
    missing = extracted.rejects.filter(pl.col("item") == "s50000004").row(0, named=True)
    assert missing["path"] == f"{folder_root}/mimic-cxr-reports/files/p11/p11000001/s50000004.txt"
    assert missing["reason"].startswith("report file missing under")


def test_reports_option_and_a_prefixed_zip(tmp_path: Path, mimic_root: Path):
    # The zip may hold a top folder; dataset.reports may point anywhere.
    elsewhere = tmp_path / "downloads" / "reports.zip"
    elsewhere.parent.mkdir()
    with zipfile.ZipFile(mimic_root / "mimic-cxr-reports.zip") as source, zipfile.ZipFile(elsewhere, "w") as target:
        for info in source.infolist():
            target.writestr(f"mimic-cxr-reports/{info.filename}", source.read(info))
    (mimic_root / "mimic-cxr-reports.zip").unlink()
    result = read_mimic_cxr({"root": str(mimic_root), "reports": str(elsewhere)}, "both", 0)
    assert result.studies["study_id"].to_list() == ["s50000001", "s50000002", "s50000003", "s50000007"]


@pytest.mark.parametrize(
    ("section", "kept", "rejected_reason"),
    [
        (
            "findings",
            ["s50000001", "s50000007"],
            "empty report: no findings text (text.section: findings); it has an impression: set text.section to impression or both to use it",
        ),
        (
            "impression",
            ["s50000001", "s50000002", "s50000003"],
            "empty report: no impression text (text.section: impression); it has findings: set text.section to findings or both to use them",
        ),
    ],
)
def test_text_section_chooses_the_report(mimic_root: Path, section, kept, rejected_reason):
    result = read_mimic_cxr({"root": str(mimic_root)}, section, 0)
    assert result.studies["study_id"].to_list() == kept
    assert result.studies["report"].to_list() == result.studies[section].to_list()
    assert any(reason.startswith(rejected_reason) for reason in result.rejects["reason"])


def test_views_and_one_image_per_study(mimic_root: Path):
    result = read_mimic_cxr(
        {"root": str(mimic_root), "views": ["PA", "AP", "LATERAL", "LL", "UNKNOWN"], "images_per_study": "first"},
        "both",
        0,
    )
    assert rows(result.images, "study_id", "image_id", "view") == [
        ("s50000001", "d01", "PA"),
        ("s50000002", "d03", "AP"),
        ("s50000003", "d04", "PA"),
        ("s50000006", "d07", "LATERAL"),
        ("s50000007", "d10", "PA"),
    ]
    every = read_mimic_cxr({"root": str(mimic_root), "views": ["LATERAL", "LL", "UNKNOWN"]}, "both", 0)
    assert rows(every.images, "image_id", "view") == [
        ("d02", "LATERAL"),
        ("d07", "LATERAL"),
        ("d08", "LL"),
        ("d09", "UNKNOWN"),
    ]


def test_rows_with_blank_ids_are_rejected(tmp_path: Path):
    root = write_mimic_tree(tmp_path / "m", gz=False)
    path = root / "mimic-cxr-2.0.0-metadata.csv"
    path.write_text(path.read_text() + '"d12","","50000001","","PA","10","10","","","","",""\n')
    result = read_mimic_cxr({"root": str(root)}, "both", 0)
    assert rows(result.rejects.filter(pl.col("item") == "d12"), "path", "reason") == [
        (None, "blank dicom_id, subject_id or study_id in mimic-cxr-2.0.0-metadata.csv")
    ]
    assert "d12" not in result.images["image_id"].to_list()


def test_corrupt_zip_member_is_rejected(mimic_root: Path):
    archive = mimic_root / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(archive) as source:
        info = source.getinfo("files/p10/p10000033/s50000003.txt")
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start : start + 8] = bytes(8)
    archive.write_bytes(bytes(data))
    result = read_mimic_cxr({"root": str(mimic_root)}, "both", 0)
    assert "s50000003" not in result.studies["study_id"].to_list()
    assert rows(result.rejects.filter(pl.col("item") == "s50000003"), "reason") == [
        ("report unreadable in mimic-cxr-reports.zip (corrupt member); its 1 image(s) are left out",)
    ]


def test_zip64_reports_are_read_by_study(tmp_path: Path):
    # More than 65,535 members: the end record points to a ZIP64 one, as in the real reports zip.
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as target:
        for number in range(65_600):
            target.writestr(f"files/p10/p10000000/s{50_000_000 + number}.txt", f"IMPRESSION: {number}.")
        target.writestr("files/p10/p10000001/s50000007.txt", "IMPRESSION: a repeated member.")
    numbers = pl.Series([50_065_599, -1, 50_000_007, 49_999_999, 50_000_000])
    texts = [sorted(chunk) for chunk in _zip_texts(archive, numbers)]
    assert texts == [[(0, "IMPRESSION: 65599."), (2, "IMPRESSION: 7."), (4, "IMPRESSION: 0.")]]


# ---------------------------------------------------------------------------------------------
# Whole-input faults


def test_missing_metadata_names_the_file(mimic_root: Path):
    (mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(DatasetError, match=r"mimic-cxr-2\.0\.0-metadata\.csv\(\.gz\) does not exist"):
        read_mimic_cxr({"root": str(mimic_root)}, "both", 0)


def test_missing_reports_names_the_zip(mimic_root: Path):
    (mimic_root / "mimic-cxr-reports.zip").unlink()
    with pytest.raises(DatasetError, match=r"mimic-cxr-reports\.zip does not exist.*dataset\.reports"):
        read_mimic_cxr({"root": str(mimic_root)}, "both", 0)


def test_unreadable_zip_names_it(mimic_root: Path):
    (mimic_root / "mimic-cxr-reports.zip").write_bytes(b"not a zip archive")
    with pytest.raises(DatasetError, match=r"mimic-cxr-reports\.zip is not a readable zip \(.+\); re-download"):
        read_mimic_cxr({"root": str(mimic_root)}, "both", 0)


def test_wrong_zip_names_it(mimic_root: Path, tmp_path: Path):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    with pytest.raises(DatasetError, match=r"none of the 7 studies has a report in .*other\.zip"):
        read_mimic_cxr({"root": str(mimic_root), "reports": str(other)}, "both", 0)


def test_missing_column_names_the_column(mimic_root: Path):
    path = mimic_root / "mimic-cxr-2.0.0-split.csv"
    path.write_text(path.read_text().replace("split\n", "fold\n", 1))
    with pytest.raises(DatasetError, match=r"split\.csv lacks column\(s\) \['split'\]"):
        read_mimic_cxr({"root": str(mimic_root)}, "both", 0)


def test_bad_split_values_name_them(mimic_root: Path):
    path = mimic_root / "mimic-cxr-2.0.0-split.csv"
    path.write_text(path.read_text().replace('"validate"', '"val"'))
    with pytest.raises(DatasetError, match=r"column 'split' has values \['val'\]"):
        read_mimic_cxr({"root": str(mimic_root)}, "both", 0)


def test_bad_label_values_name_the_column(tmp_path: Path):
    root = write_mimic_tree(tmp_path / "m", gz=False)
    path = root / "mimic-cxr-2.0.0-chexpert.csv"
    path.write_text(path.read_text().replace('"1.0"', '"2.0"', 1))
    with pytest.raises(DatasetError, match=r"label column 'No Finding' has values \['2.0'\]"):
        read_mimic_cxr({"root": str(root)}, "both", 0)


def test_a_patient_in_two_splits_is_named(mimic_root: Path):
    path = mimic_root / "mimic-cxr-2.0.0-split.csv"
    path.write_text(
        path.read_text().replace('"d03","50000002","10000032","train"', '"d03","50000002","10000032","test"')
    )
    with pytest.raises(DatasetError, match=r"10000032 \(test/train\)"):
        read_mimic_cxr({"root": str(mimic_root)}, "both", 0)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"root": None}, "needs dataset.root"),
        ({"root": "/nonexistent/mimic"}, "is not a folder"),
        ({"views": ["FRONTAL"]}, r"dataset\.views has \['FRONTAL'\]"),
        ({"images_per_study": "best"}, "images_per_study is 'best'"),
    ],
)
def test_config_faults(mimic_root: Path, cfg, message):
    with pytest.raises(DatasetError, match=message):
        read_mimic_cxr({"root": str(mimic_root)} | cfg, "both", 0)


def test_unknown_section_is_a_config_fault(mimic_root: Path):
    with pytest.raises(DatasetError, match="text.section is 'summary'"):
        read_mimic_cxr({"root": str(mimic_root)}, "summary", 0)
