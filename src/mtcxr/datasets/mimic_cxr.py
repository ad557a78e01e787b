"""Dataset kind `mimic_cxr`: MIMIC-CXR-JPG 2.0/2.1 images and metadata with the MIMIC-CXR reports.

Layout under `dataset.root` (DESIGN §7): `mimic-cxr-2.0.0-metadata.csv[.gz]`,
`mimic-cxr-2.0.0-split.csv[.gz]`, optionally `mimic-cxr-2.0.0-chexpert.csv[.gz]`,
and the images at `files/p{first 2 digits}/p{subject_id}/s{study_id}/{dicom_id}.jpg`.
Reports come from `dataset.reports` (the `mimic-cxr-reports.zip` of MIMIC-CXR, read in
place, or the folder it was extracted into); by default `root/mimic-cxr-reports.zip`,
else `root/mimic-cxr-reports/`, else the `.txt` files beside the image folders under
`root/files/`.

Choices, and why:

- **Ids.** `patient_id` is the bare `subject_id` ("10000032"); `study_id` is
  `s{study_id}` ("s50414267"), the name of the study's image folder and report
  file, so an id leads straight to its files; `image_id` is the `dicom_id`.
- **Split.** The official split file, as is (it is patient-level).
- **Views.** `ViewPosition` PA, AP, LATERAL and LL map to themselves and
  "XTABLE LATERAL" to LATERAL; every other value (decubitus, oblique, swimmer's,
  "AP AXIAL", blank) is UNKNOWN. `dataset.views` (default PA, AP) keeps images of
  those views; `images_per_study: all` (default) keeps every such image, so t2i
  counts any frontal image of the study as a hit and i2t queries with each;
  `first` keeps one per study (PA before AP, then the smallest dicom_id).
  A study without an image of an allowed view is rejected with the views it has.
- **Sections.** See `parse_report_sections`.
- **Labels.** The CheXpert CSV (`-chexpert`, not `-negbio`) becomes the labels
  table with source "dataset"; without it there are no dataset labels.
- **Cost.** Ingest never touches an image: width and height come from the
  metadata's Columns and Rows, and a missing JPEG is rejected by preprocessing.
  The zip is read one member at a time in file order, each report parsed and
  its raw text dropped at once, so memory holds only the tables.
"""

from __future__ import annotations

import logging
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl

from mtcxr.datasets import IngestResult
from mtcxr.datasets.errors import DatasetError
from mtcxr.datasets.manifest import (
    assemble,
    check_section,
    dataset_options,
    dataset_root,
    labels_from_columns,
    rejects_frame,
    require_columns,
)
from mtcxr.tables import SPLITS

log = logging.getLogger(__name__)

METADATA = "mimic-cxr-2.0.0-metadata.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"
CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv"
REPORTS_ZIP = "mimic-cxr-reports.zip"
REPORTS_DIR = "mimic-cxr-reports"
VIEW_POSITIONS = {"PA": "PA", "AP": "AP", "LATERAL": "LATERAL", "LL": "LL", "XTABLE LATERAL": "LATERAL"}
REPORT_MEMBER = re.compile(r"(?:^|/)p(\d+)/s(\d+)\.txt$")
CHUNK = 20_000  # reports parsed per Arrow chunk

# ---------------------------------------------------------------------------------------------
# Report sections

FINDINGS_HEADINGS = {"FINDINGS", "FINDING"}
IMPRESSION_HEADINGS = {"IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS"}
COMBINED_HEADINGS = {
    "FINDINGS AND IMPRESSION",
    "FINDINGS/IMPRESSION",
    "IMPRESSION AND FINDINGS",
    "FINDINGS AND IMPRESSIONS",
}
ADMIN_HEADINGS = {
    "EXAMINATION",
    "EXAM",
    "TYPE OF EXAMINATION",
    "INDICATION",
    "INDICATIONS",
    "HISTORY",
    "CLINICAL HISTORY",
    "CLINICAL INFORMATION",
    "CLINICAL INDICATION",
    "REASON FOR EXAM",
    "REASON FOR EXAMINATION",
    "TECHNIQUE",
    "COMPARISON",
    "COMPARISONS",
    "PROCEDURE",
    "NOTIFICATION",
    "RECOMMENDATION",
    "RECOMMENDATIONS",
    "RECOMMENDATION(S)",
    "WET READ",
    "PROVISIONAL FINDINGS IMPRESSION (PFI)",
    "FINAL REPORT",
    "REFERENCE EXAM",
}
KNOWN_HEADINGS = FINDINGS_HEADINGS | IMPRESSION_HEADINGS | COMBINED_HEADINGS | ADMIN_HEADINGS
# A heading candidate opens a line and ends at a colon; `_is_heading` then keeps known names in any
# case and any all-capitals label (two cheap steps: one regex with the names inside is 3x slower).
HEADING = re.compile(r"^[ \t]*([A-Za-z][A-Za-z ,&/()\-]{0,60}):", re.MULTILINE)
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
TITLE_LINE = re.compile(r"^[ \t]*FINAL REPORT[ \t]*$", re.MULTILINE)


def parse_report_sections(text: str) -> tuple[str | None, str | None]:
    """Return (findings, impression) of a free-text radiology report; None where a section is absent or empty.

    The rule:

    1. A heading is a known section name in any case, or any upper-case phrase, at the
       start of a line and followed by a colon ("FINDINGS:", "Impression:",
       "PA AND LATERAL VIEWS OF THE CHEST:"). A section runs to the next heading.
    2. FINDINGS / FINDING sections give `findings`; IMPRESSION / IMPRESSIONS /
       CONCLUSION / CONCLUSIONS sections give `impression` (repeated sections are joined).
       A combined heading naming both (e.g. "FINDINGS AND IMPRESSION:") gives both.
    3. A report with a FINDINGS section but no impression has impression None, and the
       reverse: nothing is guessed when the report names its sections.
    4. A report with neither: the impression is the last paragraph (blocks split by blank
       lines) that does not start with an administrative heading (EXAMINATION,
       INDICATION, HISTORY, TECHNIQUE, COMPARISON, NOTIFICATION, RECOMMENDATION,
       WET READ, ...), with any other heading label removed; findings is None. This is
       the MIMIC-CXR authors' own fallback (the last paragraph holds the conclusion).
    5. Text is whitespace-normalised (line wraps become single spaces); the
       "FINAL REPORT" title line is dropped.
    """
    text = TITLE_LINE.sub("", text or "")
    headings = [match for match in HEADING.finditer(text) if _is_heading(match.group(1))]
    findings, impression, combined = [], [], []
    for number, heading in enumerate(headings):
        name = _heading_name(heading.group(1))
        end = headings[number + 1].start() if number + 1 < len(headings) else len(text)
        body = text[heading.end() : end]
        if "FINDING" in name and "IMPRESSION" in name:
            combined.append(body)
        elif name in FINDINGS_HEADINGS:
            findings.append(body)
        elif name in IMPRESSION_HEADINGS:
            impression.append(body)
    if findings or impression or combined:
        return _joined(findings + combined), _joined(impression or combined)
    return None, _last_paragraph(text)


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def _heading_name(label: str) -> str:
    return _squeeze(label).upper()


def _is_heading(label: str) -> bool:
    return label.isupper() or _heading_name(label) in KNOWN_HEADINGS


def _joined(bodies: list[str]) -> str | None:
    return _squeeze(" ".join(bodies)) or None


def _last_paragraph(text: str) -> str | None:
    for paragraph in reversed(PARAGRAPH_BREAK.split(text)):
        paragraph = paragraph.strip()
        heading = HEADING.match(paragraph)
        if heading and not _is_heading(heading.group(1)):
            heading = None
        if heading and _heading_name(heading.group(1)) in ADMIN_HEADINGS:
            continue
        body = paragraph[heading.end() :] if heading else paragraph
        body = _squeeze(body)
        if body:
            return body
    return None


# ---------------------------------------------------------------------------------------------
# The reader


def read_mimic_cxr(cfg: dict, text_section: str, seed: int) -> IngestResult:
    """Read MIMIC-CXR-JPG metadata, split, CheXpert labels and MIMIC-CXR reports into the contract tables.

    `seed` is unused: MIMIC's official split is kept as is.
    """
    check_section(text_section)
    views, policy = dataset_options(cfg)
    root = dataset_root(cfg, "mimic_cxr")
    metadata_path = _find_csv(root, METADATA, required=True)
    split_path = _find_csv(root, SPLIT, required=True)
    chexpert_path = _find_csv(root, CHEXPERT, required=False)
    reports = _reports_source(cfg, root)

    images, rejects = _images(root, metadata_path, split_path)
    studies = images.group_by("study_id").agg(
        patient_id=pl.col("patient_id").first(),
        split=pl.col("split").first(),
        study_number=pl.col("study_number").first(),
    )
    studies = _read_reports(reports, studies)
    labels = _labels(chexpert_path) if chexpert_path else None
    if labels is None:
        log.warning("no %s(.gz) under %s: no dataset labels; labels will be extracted from the reports", CHEXPERT, root)
    return assemble(
        studies.drop("study_number"),
        images.select("image_id", "study_id", "view", "path", "width", "height"),
        text_section=text_section,
        views=views,
        images_per_study=policy,
        dataset="mimic_cxr",
        source=metadata_path,
        labels=labels,
        rejects=rejects,
    )


def _find_csv(root: Path, name: str, required: bool) -> Path | None:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    if required:
        raise DatasetError(
            f"{root / name}(.gz) does not exist; dataset.root must be the MIMIC-CXR-JPG folder that holds "
            f"{name}.gz (download it from PhysioNet with the images)."
        )
    return None


def _scan(path: Path, columns: list[str], fix: str) -> pl.LazyFrame:
    """Scan the named columns of a CSV (gzipped or not) as strings; DatasetError names a missing column."""
    try:
        frame = pl.scan_csv(path, infer_schema=False)
        require_columns(frame.collect_schema().names(), columns, path, fix)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise DatasetError(f"{path} cannot be read as CSV ({error}); re-download it from PhysioNet.") from error
    return frame.select(columns)


def _stripped(column: str) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    return pl.when(text.str.len_chars() > 0).then(text)


def _images(root: Path, metadata_path: Path, split_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One row per image with its study, patient, split, view, path and size; and the images rejected."""
    fix = "use the file as PhysioNet ships it."
    metadata = _scan(metadata_path, ["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"], fix)
    splits = _scan(split_path, ["dicom_id", "split"], fix).unique("dicom_id", keep="first")
    files = str(root / "files")
    table = (
        metadata.join(splits, on="dicom_id", how="left")
        .with_columns(
            image_id=_stripped("dicom_id"),
            patient_id=_stripped("subject_id"),
            study_number=_stripped("study_id"),
            view=pl.col("ViewPosition")
            .str.strip_chars()
            .str.to_uppercase()
            .replace_strict(VIEW_POSITIONS, default="UNKNOWN"),
            width=pl.col("Columns").cast(pl.Float64, strict=False).cast(pl.Int32, strict=False),
            height=pl.col("Rows").cast(pl.Float64, strict=False).cast(pl.Int32, strict=False),
            split=_stripped("split"),
        )
        .with_columns(
            study_id=pl.concat_str([pl.lit("s"), pl.col("study_number")]),
            path=pl.concat_str(
                [
                    pl.lit(files),
                    pl.lit("/p"),
                    pl.col("patient_id").str.slice(0, 2),
                    pl.lit("/p"),
                    pl.col("patient_id"),
                    pl.lit("/s"),
                    pl.col("study_number"),
                    pl.lit("/"),
                    pl.col("image_id"),
                    pl.lit(".jpg"),
                ]
            ),
        )
        .select("image_id", "study_id", "study_number", "patient_id", "split", "view", "path", "width", "height")
        .collect()
    )
    given = table["split"].drop_nulls().unique()
    bad = given.filter(~given.is_in(list(SPLITS))).sort().head(5).to_list()
    if bad:
        raise DatasetError(
            f"{split_path}: column 'split' has values {bad}; allowed: {list(SPLITS)}. "
            "Use the official split file as is."
        )
    named = pl.col("image_id").is_not_null() & pl.col("patient_id").is_not_null() & pl.col("study_number").is_not_null()
    row_item = pl.coalesce(pl.col("image_id"), pl.format("{} row {}", pl.lit(metadata_path.name), pl.col("row")))
    rejects = pl.concat(
        [
            table.with_row_index("row", offset=1)
            .filter(~named)
            .select(
                rejects_frame(
                    row_item, pl.col("path"), f"blank dicom_id, subject_id or study_id in {metadata_path.name}"
                )
            ),
            table.filter(named & pl.col("split").is_null()).select(
                rejects_frame(pl.col("image_id"), pl.col("path"), f"no row in {split_path.name}")
            ),
        ]
    )
    table = table.filter(named & pl.col("split").is_not_null())
    unknown = table.filter(pl.col("view") == "UNKNOWN")["image_id"].n_unique()
    if unknown:
        log.info("%d image(s) have a ViewPosition other than PA, AP, LATERAL, LL: view UNKNOWN", unknown)
    return table, rejects


def _reports_source(cfg: dict, root: Path) -> Path:
    if cfg.get("reports"):
        source = Path(cfg["reports"]).expanduser()
        if not source.exists():
            raise DatasetError(
                f"dataset.reports {source} does not exist; "
                f"point it at {REPORTS_ZIP} or the folder it was extracted into."
            )
        return source
    for candidate in (root / REPORTS_ZIP, root / REPORTS_DIR, root / "files"):
        if candidate.exists():
            return root if candidate.name == "files" else candidate
    raise DatasetError(
        f"no reports found: {root / REPORTS_ZIP} does not exist; download {REPORTS_ZIP} from MIMIC-CXR (PhysioNet) "
        "into dataset.root or set dataset.reports to it or to its extracted folder."
    )


def _read_reports(source: Path, studies: pl.DataFrame) -> pl.DataFrame:
    """Return `studies` with findings, impression, fault and report_path from each study's report.

    Parsed sections go into Arrow chunks every CHUNK reports, so Python holds at
    most one chunk of strings however many reports there are.
    """
    studies = studies.with_row_index("row")
    member = pl.concat_str(
        [
            pl.lit("p"),
            pl.col("patient_id").str.slice(0, 2),
            pl.lit("/p"),
            pl.col("patient_id"),
            pl.lit("/s"),
            pl.col("study_number"),
            pl.lit(".txt"),
        ]
    )
    numbers = studies["study_number"].cast(pl.Int64, strict=False).fill_null(-1).to_numpy()
    order = np.argsort(numbers, kind="stable")
    sorted_numbers = numbers[order]

    def row_of(number: int) -> int | None:
        at = int(np.searchsorted(sorted_numbers, number))
        return int(order[at]) if at < len(sorted_numbers) and sorted_numbers[at] == number else None

    if source.is_file():
        studies = studies.with_columns(report_path=pl.concat_str([pl.lit(f"{source}:files/"), member]))
        texts = _zip_reports(source, row_of)
        missing, unreadable = (
            f"report missing from {source.name}",
            f"report unreadable in {source.name} (corrupt member)",
        )
    else:
        base = source / "files" if (source / "files").is_dir() else source
        studies = studies.with_columns(report_path=pl.concat_str([pl.lit(f"{base}/"), member]))
        texts = _folder_reports(studies["report_path"])
        missing, unreadable = f"report file missing under {base}", "report file unreadable"

    chunks, rows, sections, readable = [], [], [], []
    for row, text in texts:
        rows.append(row)
        sections.append(parse_report_sections(text) if text is not None else (None, None))
        readable.append(text is not None)
        if len(rows) >= CHUNK:
            chunks.append(_chunk(rows, sections, readable))
            rows, sections, readable = [], [], []
    chunks.append(_chunk(rows, sections, readable))
    parsed = pl.concat(chunks)
    if studies.height and parsed.height == 0:
        raise DatasetError(
            f"none of the {studies.height} studies has a report in {source} (looked for {studies['report_path'][0]}); "
            f"download {REPORTS_ZIP} from MIMIC-CXR (PhysioNet) and set dataset.reports to it or to the folder it was "
            "extracted into."
        )
    studies = studies.join(parsed, on="row", how="left")
    return studies.with_columns(
        fault=pl.when(pl.col("readable").is_null())
        .then(pl.lit(missing))
        .when(~pl.col("readable"))
        .then(pl.lit(unreadable))
        .otherwise(None),
    ).drop("row", "readable")


def _chunk(rows: list[int], sections: list[tuple[str | None, str | None]], readable: list[bool]) -> pl.DataFrame:
    findings, impression = zip(*sections) if sections else ((), ())
    return pl.DataFrame(
        {"row": rows, "findings": list(findings), "impression": list(impression), "readable": readable},
        schema={"row": pl.UInt32, "findings": pl.String, "impression": pl.String, "readable": pl.Boolean},
    )


def _zip_reports(path: Path, row_of) -> Iterator[tuple[int, str | None]]:
    """Yield (study row, text) for each wanted report of the zip, in file order; text None if unreadable.

    The central directory is streamed entry by entry and each member read straight from
    its offset, one at a time, so memory does not grow with the number of members
    (zipfile.ZipFile keeps an object per member, about 0.5 kB each, and its per-member
    `open` costs five times the inflating itself over 227,835 small files).
    """
    seen: set[int] = set()
    try:
        with open(path, "rb") as directory, open(path, "rb") as data:
            for name, entry in _central_directory(directory):
                match = REPORT_MEMBER.search(name)
                row = row_of(int(match.group(2))) if match else None
                if row is None or row in seen:
                    continue
                seen.add(row)
                yield row, _member_text(data, entry)
    except (zipfile.BadZipFile, OSError, struct.error) as error:
        raise DatasetError(f"{path} is not a readable zip ({error}); re-download {REPORTS_ZIP}.") from error


ZipEntry = tuple[int, int, int, int, int]  # flags, method, crc, compressed size, local header offset
CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
END = struct.Struct("<4sHHHHIIH")
END64 = struct.Struct("<4sQHHIIQQQQ")
LOCATOR64 = struct.Struct("<4sIQI")


def _central_directory(handle: BinaryIO) -> Iterator[tuple[str, ZipEntry]]:
    """Yield (member name, entry) from a zip's central directory, ZIP64 included, without holding it."""
    size = handle.seek(0, 2)
    tail_size = min(size, END.size + 65_535)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0:
        raise zipfile.BadZipFile("no end of central directory record")
    _, _, _, _, count, _, offset, _ = END.unpack_from(tail, at)
    if count == 0xFFFF or offset == 0xFFFFFFFF:
        _, _, end64_offset, _ = LOCATOR64.unpack_from(tail, at - LOCATOR64.size)
        handle.seek(end64_offset)
        _, _, _, _, _, _, _, count, _, offset = END64.unpack(handle.read(END64.size))
    handle.seek(offset)
    for _ in range(count):
        fields = CENTRAL.unpack(handle.read(CENTRAL.size))
        if fields[0] != b"PK\x01\x02":
            raise zipfile.BadZipFile("bad central directory entry")
        flags, method, crc, compressed, uncompressed = fields[3], fields[4], fields[7], fields[8], fields[9]
        name_length, extra_length, comment_length, local_offset = fields[10], fields[11], fields[12], fields[16]
        name = handle.read(name_length).decode("utf-8" if flags & 0x800 else "cp437")
        extra = handle.read(extra_length)
        handle.seek(comment_length, 1)
        if 0xFFFFFFFF in (compressed, uncompressed, local_offset):
            compressed, local_offset = _zip64_sizes(extra, uncompressed, compressed, local_offset)
        yield name, (flags, method, crc, compressed, local_offset)


def _zip64_sizes(extra: bytes, uncompressed: int, compressed: int, local_offset: int) -> tuple[int, int]:
    position = 0
    while position + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, position)
        if tag == 0x0001:
            values = iter(struct.unpack_from(f"<{length // 8}Q", extra, position + 4))
            if uncompressed == 0xFFFFFFFF:
                next(values)
            if compressed == 0xFFFFFFFF:
                compressed = next(values)
            if local_offset == 0xFFFFFFFF:
                local_offset = next(values)
            break
        position += 4 + length
    return compressed, local_offset


def _member_text(handle: BinaryIO, entry: ZipEntry) -> str | None:
    flags, method, crc, compressed, local_offset = entry
    if flags & 0x1 or method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return None  # encrypted, or a compression MIMIC's zip does not use
    try:
        handle.seek(local_offset)
        header = handle.read(30)
        if header[:4] != b"PK\x03\x04":
            return None
        name_length, extra_length = struct.unpack_from("<HH", header, 26)
        handle.seek(name_length + extra_length, 1)
        data = handle.read(compressed)
        if method == zipfile.ZIP_DEFLATED:
            data = zlib.decompress(data, -15)
    except (zlib.error, OSError, struct.error):
        return None
    if zlib.crc32(data) != crc:
        return None
    return data.decode("utf-8", errors="replace")


def _folder_reports(paths: pl.Series) -> Iterator[tuple[int, str | None]]:
    for row, path in enumerate(paths):
        try:
            yield row, Path(path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError:
            yield row, None


def _labels(path: Path) -> pl.DataFrame | None:
    try:
        # Label columns as numbers (inferred over the whole file), ids as text.
        table = pl.read_csv(
            path, schema_overrides={"subject_id": pl.String, "study_id": pl.String}, infer_schema_length=None
        )
    except (pl.exceptions.PolarsError, OSError) as error:
        raise DatasetError(f"{path} cannot be read as CSV ({error}); re-download it from PhysioNet.") from error
    require_columns(table.columns, ["study_id"], path, "use the CheXpert CSV as PhysioNet ships it.")
    table = table.with_columns(study_id=pl.concat_str([pl.lit("s"), pl.col("study_id").str.strip_chars()]))
    return labels_from_columns(table, path)
