"""Miniature trees of each dataset layout, with planted faults, shared by the dataset tests."""

from __future__ import annotations

import gzip
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REAL_IU = Path(__file__).resolve().parents[3] / "shared/data/iu_xray"


def write_csv(path: Path, header: list[str], rows: list[list], gz: bool = False) -> Path:
    """Write a CSV (gzipped when `gz`), quoting every field so commas and newlines survive."""

    def quote(value) -> str:
        return "" if value is None else '"' + str(value).replace('"', '""') + '"'

    text = ",".join(header) + "\n" + "".join(",".join(quote(value) for value in row) + "\n" for row in rows)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_image(path: Path, size: tuple[int, int] = (40, 48), mode: str = "L") -> Path:
    """Write a small image with a gradient, in `mode`, to `path` (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    ramp = np.linspace(0, 1, width * height, dtype=np.float32).reshape(height, width)
    if mode == "I;16":
        Image.fromarray((ramp * 4000 + 100).astype(np.uint16)).save(path)
    else:
        Image.fromarray((ramp * 255).astype(np.uint8), mode="L").convert(mode).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG

MIMIC_FULL = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 COMPARISON:  None.

 FINDINGS:

 The lungs are clear.  No pleural effusion or
 pneumothorax.

 IMPRESSION:

 No acute cardiopulmonary process.
"""
MIMIC_IMPRESSION_ONLY = """                                 FINAL REPORT
 INDICATION:  Dyspnea.

 IMPRESSION:  Small left pleural effusion.
"""
MIMIC_NO_HEADINGS = """                                 FINAL REPORT
 CHEST RADIOGRAPH PERFORMED ON ___

 COMPARISON:  Prior exam from ___.

 Heart size is normal.

 No focal consolidation.
"""
MIMIC_ONE_IMAGE_REPORT = """ FINDINGS:  Mild pulmonary edema.
"""

# (dicom_id, subject_id, study_id, ViewPosition, Rows, Columns)
MIMIC_METADATA = [
    ("d01", "10000032", "50000001", "PA", 3056, 2544),
    ("d02", "10000032", "50000001", "LATERAL", 3056, 2544),
    ("d03", "10000032", "50000002", "AP", 2539, 3050),
    ("d04", "10000033", "50000003", "PA", 2000, 2000),
    ("d05", "11000001", "50000004", "PA", 2000, 2000),  # report missing from the zip
    ("d06", "11000001", "50000005", "PA", 2000, 2000),  # empty report
    ("d07", "11000002", "50000006", "LATERAL", 2000, 2000),  # lateral views only
    ("d08", "11000002", "50000006", "LL", 2000, 2000),
    ("d09", "11000002", "50000007", "AP AXIAL", 2000, 2000),  # view UNKNOWN
    ("d10", "11000002", "50000007", "PA", 2000, 2000),
    ("d09", "11000002", "50000007", "AP AXIAL", 2000, 2000),  # duplicate dicom_id
    ("d11", "11000002", "50000007", "AP", 2000, 2000),  # absent from the split file
]
MIMIC_SPLIT = {"10000032": "train", "10000033": "validate", "11000001": "test", "11000002": "test"}
MIMIC_REPORTS = {
    "50000001": MIMIC_FULL,
    "50000002": MIMIC_IMPRESSION_ONLY,
    "50000003": MIMIC_NO_HEADINGS,
    "50000005": "   \n  \n",
    "50000006": MIMIC_FULL,
    "50000007": MIMIC_ONE_IMAGE_REPORT,
}
CHEXPERT_HEADER = [
    "subject_id",
    "study_id",
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
]


def chexpert_row(subject: str, study: str, **values: float) -> list:
    names = {header: None for header in CHEXPERT_HEADER[2:]}
    names.update({key.replace("_", " "): value for key, value in values.items()})
    return [subject, study, *names.values()]


@dataclass
class MimicExtra:
    """Rows appended to the miniature MIMIC tree (good studies for end-to-end runs, more faults)."""

    metadata: list[tuple] = field(default_factory=list)  # as MIMIC_METADATA
    split: dict[str, str] = field(default_factory=dict)  # subject_id -> split
    reports: dict[str, str] = field(default_factory=dict)  # study_id -> report text
    chexpert: list[list] = field(default_factory=list)  # chexpert_row(...) rows
    files: dict[str, bytes] = field(default_factory=dict)  # dicom_id -> image file content


def write_mimic_tree(
    root: Path, reports: str = "zip", gz: bool = True, images: bool = False, extra: MimicExtra | None = None
) -> Path:
    """Write a miniature MIMIC-CXR-JPG tree with the planted faults listed above.

    Ingest never opens an image, so by default none is written; `images=True` writes a
    small grayscale JPEG for each, except d04 (missing) and d03 (truncated), for
    end-to-end runs. `extra` appends rows and image files.
    """
    extra = extra or MimicExtra()
    metadata = MIMIC_METADATA + extra.metadata
    split = {**MIMIC_SPLIT, **extra.split}
    root.mkdir(parents=True, exist_ok=True)
    metadata_header = [
        "dicom_id",
        "subject_id",
        "study_id",
        "PerformedProcedureStepDescription",
        "ViewPosition",
        "Rows",
        "Columns",
        "StudyDate",
        "StudyTime",
        "ProcedureCodeSequence_CodeMeaning",
        "ViewCodeSequence_CodeMeaning",
        "PatientOrientationCodeSequence_CodeMeaning",
    ]
    write_csv(
        root / "mimic-cxr-2.0.0-metadata.csv",
        metadata_header,
        [
            [d, s, st, "CHEST (PA AND LAT)", v, r, c, "21800506", "213014.531", "", "", ""]
            for d, s, st, v, r, c in metadata
        ],
        gz=gz,
    )
    write_csv(
        root / "mimic-cxr-2.0.0-split.csv",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[d, st, s, split[s]] for d, s, st, *_ in dict.fromkeys(metadata) if d != "d11"],
        gz=not gz,
    )
    write_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv",
        CHEXPERT_HEADER,
        [
            chexpert_row("10000032", "50000001", No_Finding=1.0),
            chexpert_row("10000032", "50000002", Pleural_Effusion=1.0, Edema=-1.0, Cardiomegaly=0.0),
            chexpert_row("10000033", "50000003"),
            chexpert_row("11000001", "50000004", Pneumonia=1.0),
            *extra.chexpert,
        ],
        gz=gz,
    )
    if images:
        for dicom, subject, study, *_ in MIMIC_METADATA:
            path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
            if dicom != "d04":
                write_image(path, (64, 80))
            if dicom == "d03":
                path.write_bytes(path.read_bytes()[:200])
    for dicom, subject, study, *_ in extra.metadata:
        if dicom in extra.files:
            path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(extra.files[dicom])
    subjects = {study: subject for _, subject, study, *_ in metadata}
    members = {
        f"files/p{subjects[study][:2]}/p{subjects[study]}/s{study}.txt": text
        for study, text in {**MIMIC_REPORTS, **extra.reports}.items()
    }
    if reports == "zip":
        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("files/", "")
            for name, text in members.items():
                archive.writestr(name, text)
    else:
        for name, text in members.items():
            path = root / "mimic-cxr-reports" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return root


@pytest.fixture
def mimic_root(tmp_path: Path) -> Path:
    return write_mimic_tree(tmp_path / "mimic")


# ---------------------------------------------------------------------------------------------
# IU X-ray (Kaggle layout)

IU_REPORTS = [
    # uid, image (examination), findings, impression
    [
        "1",
        "Xray Chest PA and Lateral",
        "The heart is normal. There are no XXXX of a pleural effusion.",
        "Normal chest x-XXXX.",
    ],
    ["2", "AP portable chest", "", "No acute disease, dated XXXX, XXXX at XXXX."],
    ["3", "CHEST 2V FRONTAL/LATERAL", "", " "],  # empty report
    ["4", "PA and lateral chest", "Clear lungs.", "Normal."],  # lateral image only
    ["5", "PA and lateral chest", "Clear lungs.", "Normal."],  # no image listed
    ["6", "CHEST 2V FRONTAL/LATERAL", "Stable cardiomegaly since 4XXXX.", "Cardiomegaly."],  # glued token
]
IU_PROJECTIONS = [
    ["1", "1_IM-0001-4001.dcm.png", "Frontal"],
    ["1", "1_IM-0001-3001.dcm.png", "Lateral"],
    ["2", "2_IM-0652-1001.dcm.png", "Frontal"],
    ["3", "3_IM-1384-1001.dcm.png", "Frontal"],
    ["4", "4_IM-2050-2001.dcm.png", "Lateral"],
    ["6", "6_IM-2192-1001.dcm.png", "Frontal"],
    ["6", "6_IM-2192-1001.dcm.png", "Frontal"],  # duplicate file name
    ["99", "99_IM-9999-1001.dcm.png", "Frontal"],  # no report for uid 99
]


@dataclass
class IuExtra:
    """Rows appended to the miniature IU X-ray tree."""

    reports: list[list] = field(default_factory=list)  # as IU_REPORTS
    projections: list[list] = field(default_factory=list)  # as IU_PROJECTIONS
    files: dict[str, bytes] = field(default_factory=dict)  # file name -> image file content


def write_iu_tree(root: Path, extra: IuExtra | None = None) -> Path:
    """Write a miniature IU X-ray Kaggle tree; only some listed images exist. `extra` appends rows and files."""
    extra = extra or IuExtra()
    root.mkdir(parents=True, exist_ok=True)
    write_csv(
        root / "indiana_reports.csv",
        ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"],
        [
            [uid, "normal", "normal", image, "Cough.", "None.", findings, impression]
            for uid, image, findings, impression in IU_REPORTS + extra.reports
        ],
    )
    write_csv(root / "indiana_projections.csv", ["uid", "filename", "projection"], IU_PROJECTIONS + extra.projections)
    images = root / "images" / "images_normalized"
    images.mkdir(parents=True, exist_ok=True)
    for name, content in extra.files.items():
        (images / name).write_bytes(content)
    write_image(images / "1_IM-0001-4001.dcm.png", (40, 48))
    write_image(images / "1_IM-0001-3001.dcm.png", (48, 40))
    write_image(images / "2_IM-0652-1001.dcm.png", (32, 36), mode="RGB")
    return root


@pytest.fixture
def iu_root(tmp_path: Path) -> Path:
    return write_iu_tree(tmp_path / "iu")


@pytest.fixture
def real_iu() -> Path:
    if not (REAL_IU / "indiana_reports.csv").is_file():
        pytest.skip(
            f"real IU X-ray data not found at {REAL_IU} (the project's shared/data folder beside the repository)"
        )
    return REAL_IU


# ---------------------------------------------------------------------------------------------
# Manifest

MANIFEST_HEADER = [
    "image_path",
    "study_id",
    "patient_id",
    "split",
    "view",
    "findings",
    "impression",
    "Pleural Effusion",
    "cardiomegaly",
    "No Finding",
]


def manifest_rows(root: Path) -> list[list]:
    """The manifest's rows; image paths are relative except one absolute, and image f.png is never written."""
    return [
        ["images/a.png", "S1", "P1", "train", "pa", "Heart normal.", "No acute disease.", "0", "0", "1"],
        ["images/b.jpg", "S1", "P1", "train", "Lateral", "Heart normal.", "No acute disease.", "0", "0", "1"],
        [f"{root}/images/c.png", "S2", "P2", "test", "AP", "", "Left effusion.", "1", "", ""],
        ["", "S3", "P3", "test", "PA", "x", "y", "", "", ""],  # blank image path
        ["images/d.png", "S4", "P3", "test", "", "  ", "", "", "", ""],  # empty report
        ["images/e.png", "S5", "P4", "Validate", "PA", "Cardiomegaly.", "Enlarged heart.", "", "1.0", ""],
        [
            "images/e.png",
            "S5",
            "P4",
            "validate",
            "PA",
            "Cardiomegaly.",
            "Enlarged heart.",
            "",
            "1.0",
            "",
        ],  # duplicate image
        ["images/f.png", "S7", "P5", "train", "PA", "Lungs clear.", "Normal.", "", "", ""],  # missing file
        ["images/g.png", "S8", "P6", "train", "PA", "Text A.", "Same.", "", "", ""],  # rows disagree on findings
        ["images/h.png", "S8", "P6", "train", "AP", "Text B.", "Same.", "", "", ""],
        ["images/i.png", "S9", "P7", "test", "", "Small nodule.", "", "", "", ""],  # view UNKNOWN
    ]


def write_manifest_tree(
    root: Path, extra_rows: list[list] | None = None, extra_files: dict[str, bytes] | None = None
) -> Path:
    """Write images of several formats and modes and a CSV manifest with the planted faults; return the CSV.

    `extra_rows` (as manifest_rows) and `extra_files` (path relative to `root` -> content) are appended.
    """
    for name, content in (extra_files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    images = root / "images"
    write_image(images / "a.png", (40, 50), "L")
    write_image(images / "b.jpg", (50, 40), "RGB")
    write_image(images / "c.png", (30, 30), "RGBA")
    write_image(images / "d.png", (20, 20), "P")
    write_image(images / "e.png", (64, 48), "I;16")
    for name in ("g", "h", "i"):
        write_image(images / f"{name}.png", (24, 24), "L")
    return write_csv(root / "manifest.csv", MANIFEST_HEADER, manifest_rows(root) + (extra_rows or []))


@pytest.fixture
def manifest_csv(tmp_path: Path) -> Path:
    return write_manifest_tree(tmp_path / "collection")
