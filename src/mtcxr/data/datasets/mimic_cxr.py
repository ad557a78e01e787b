"""Dataset kind `mimic_cxr`: MIMIC-CXR-JPG 2.0/2.1 images and metadata with the MIMIC-CXR reports.

Layout under `dataset.root` (docs/design.md, Datasets): `mimic-cxr-2.0.0-metadata.csv[.gz]`,
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
  Memory grows far less than the set (benchmarks/datasets.md): the CSVs
  are decompressed and parsed a block at a time, and `write_mimic_cxr` reads,
  parses, judges and writes the studies a chunk at a time in their final order,
  each report's raw text dropped as soon as it is parsed. What is held whole is
  the per-image keys (ids, split, view, size), zipfile's index of the reports zip,
  the rejects and the labels.
"""

from __future__ import annotations

import gzip
import logging
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import polars as pl

from mtcxr.data.datasets.assembly import (
    IngestResult,
    check_kept,
    dataset_options,
    dataset_root,
    image_reason,
    kept_images,
    labels_from_columns,
    log_counts,
    log_views_left_out,
    mark_images,
    rejected,
    rejects_frame,
    require_columns,
    sorted_rejects,
    study_reasons,
)
from mtcxr.data.datasets.errors import DatasetError
from mtcxr.data.datasets.views import canonical_view
from mtcxr.data.text import check_section
from mtcxr.tables import SPLITS, empty_table, table_writer, write_table

log = logging.getLogger(__name__)

METADATA = "mimic-cxr-2.0.0-metadata.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"
CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv"
REPORTS_ZIP = "mimic-cxr-reports.zip"
REPORTS_DIR = "mimic-cxr-reports"
REPORT_MEMBER = re.compile(r"(?:^|/)p(\d+)/s(\d+)\.txt$")
TABLES = ("studies", "images", "rejects", "labels")
CSV_BLOCK = 1 << 20  # bytes of CSV text parsed at a time
CHUNK = 10_000  # studies (or images) read, parsed and written per Parquet row group

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

    The tables are those `write_mimic_cxr` writes, read back from a temporary folder: the
    ingest stage calls `write_mimic_cxr` itself so that it never holds them whole.
    `seed` is unused: MIMIC's official split is kept as is.
    """
    with tempfile.TemporaryDirectory() as folder:
        paths = {name: Path(folder) / f"{name}.parquet" for name in TABLES}
        write_mimic_cxr(cfg, text_section, paths)
        return IngestResult(**{name: pl.read_parquet(path) for name, path in paths.items()})


def write_mimic_cxr(cfg: dict, text_section: str, paths: Mapping[str, str | Path]) -> None:
    """Write the studies, images, rejects and labels tables of MIMIC-CXR-JPG to `paths` (keyed by table name).

    The rules are `assemble`'s, applied CHUNK studies at a time in their final order:
    each chunk's reports are read and parsed, its studies and images judged and written,
    then dropped. Memory holds the per-image keys (ids, split, view, size), the zip's
    index, the rejects and the labels, never the report text or the image paths.
    """
    check_section(text_section)
    views, policy = dataset_options(cfg)
    root = dataset_root(cfg, "mimic_cxr")
    metadata_path, split_path, chexpert_path, reports = mimic_cxr_files(cfg)
    files = str(root / "files")

    images, reader_rejects = _images(files, metadata_path, split_path)
    # Read first, so that a fault in it stops ingest before any table is written.
    labels = _labels(chexpert_path) if chexpert_path else None
    if labels is None:
        log.warning("no %s(.gz) under %s: no dataset labels; labels will be extracted from the reports", CHEXPERT, root)
        labels = empty_table("labels")
    # Marked over all images: a repeated dicom_id may sit in another study, hence another chunk.
    images = images.with_columns(_duplicate=~pl.col("image_id").is_first_distinct())
    log_views_left_out(images.filter(~pl.col("_duplicate")), views)
    studies, image_rows = _by_study(images)
    kept, rejects, written = [], [reader_rejects], 0
    with (
        table_writer("studies", paths["studies"]) as write_studies,
        table_writer("images", paths["images"]) as write_images,
    ):
        for chunk, rows in zip(_with_reports(reports, studies), image_rows, strict=True):
            chunk_images, per_study = mark_images(images.select(pl.all().gather(rows)), chunk["study_id"], views)
            chunk = study_reasons(chunk, per_study, text_section=text_section, views=views, source=metadata_path)
            chunk_images = chunk_images.with_columns(
                _reason=image_reason(metadata_path, metadata_path), path=_image_path(files)
            )
            rejects += [rejected(chunk, "study_id", "report_path"), rejected(chunk_images, "image_id", "path")]
            chunk = chunk.filter(pl.col("_reason").is_null()).with_columns(dataset=pl.lit("mimic_cxr"))
            write_studies(chunk)
            chunk_images = kept_images(chunk_images.drop("patient_id", "split"), chunk, views, policy)
            write_images(chunk_images)
            written += chunk_images.height
            kept.append(chunk.select("study_id", "patient_id", "split"))
        kept = pl.concat([studies.clear(), *kept])
        rejects = sorted_rejects(rejects)
        check_kept(kept, rejects, metadata_path)
    write_table(rejects, "rejects", paths["rejects"])
    labels = labels.filter(
        pl.col("study_id").is_first_distinct() & pl.col("study_id").is_in(kept["study_id"].implode())
    )
    write_table(labels.sort("study_id"), "labels", paths["labels"])
    log_counts("mimic_cxr", kept.height, written, rejects.height, labels.height)


def mimic_cxr_files(cfg: dict) -> tuple[Path, Path, Path | None, Path]:
    """Return the (metadata, split, CheXpert or None, reports) files ingest reads, or raise DatasetError.

    `reports` is the reports zip, or the folder its files were extracted into.
    """
    root = dataset_root(cfg, "mimic_cxr")
    metadata_path = _find_csv(root, METADATA, required=True)
    split_path = _find_csv(root, SPLIT, required=True)
    chexpert_path = _find_csv(root, CHEXPERT, required=False)
    return metadata_path, split_path, chexpert_path, _reports_source(cfg, root)


def _by_study(images: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.Series]]:
    """Return one row per study, sorted, with the patient and split of its first image (in file order),
    and for each CHUNK of those studies the row numbers of their images."""
    order = images.select(pl.int_range(pl.len(), dtype=pl.UInt32).sort_by("study_id", maintain_order=True)).to_series()
    study_ids = images["study_id"].gather(order)
    starts = (study_ids != study_ids.shift()).fill_null(True).arg_true()
    studies = images.select(pl.col("study_id", "patient_id", "split").gather(order.gather(starts)))
    bounds = [*starts.gather_every(CHUNK).to_list(), len(order)]
    return studies, [order.slice(start, end - start) for start, end in zip(bounds, bounds[1:])]


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


def _csv_blocks(path: Path, columns: list[str], fix: str, every_column: bool = False) -> Iterator[pl.DataFrame]:
    """Yield the named columns (or all, with `every_column`) of a CSV, gzipped or not, as strings, a block at a time.

    polars decompresses a gzipped CSV whole before parsing it, so memory would grow with
    the file; here CSV_BLOCK bytes are decompressed, cut at the last line end outside
    quotes and parsed at a time. A file without rows yields one empty frame.
    DatasetError names a missing column or an unreadable file.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    selected = None if every_column else columns
    try:
        with opener(path, "rb") as handle:
            header = handle.readline()
            names = pl.read_csv(header, infer_schema=False).columns if header.strip() else []
            require_columns(names, columns, path, fix)
            rest, blocks = b"", 0
            while block := handle.read(CSV_BLOCK):
                rest += block
                if end := _line_end(rest):
                    yield pl.read_csv(header + rest[:end], infer_schema=False, columns=selected)
                    rest, blocks = rest[end:], blocks + 1
            if rest.strip() or not blocks:
                yield pl.read_csv(header + rest, infer_schema=False, columns=selected)
    except (pl.exceptions.PolarsError, OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{path} cannot be read as CSV ({error}); re-download it from PhysioNet.") from error


def _line_end(data: bytes) -> int:
    """The position after the last line end of `data` (which starts a line) outside quotes; 0 if none."""
    end = len(data)
    while (end := data.rfind(b"\n", 0, end)) >= 0:
        if data.count(b'"', 0, end) % 2 == 0:
            return end + 1
    return 0


def _stripped(column: str) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    return pl.when(text.str.len_chars() > 0).then(text)


def _image_path(files: str) -> pl.Expr:
    """files/p{first 2 digits}/p{subject_id}/s{study_id}/{dicom_id}.jpg, null where an id is blank."""
    subject = pl.col("patient_id")
    parts = [pl.lit(files), pl.lit("/p"), subject.str.slice(0, 2), pl.lit("/p"), subject, pl.lit("/")]
    return pl.concat_str([*parts, pl.col("study_id"), pl.lit("/"), pl.col("image_id"), pl.lit(".jpg")])


def _images(files: str, metadata_path: Path, split_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One row per listed image with its study, patient, split, view and size (no path); and the rows rejected."""
    fix = "use the file as PhysioNet ships it."
    columns = ["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"]
    # Each block is cut down to the columns kept before the next is read.
    splits = pl.concat(
        block.select(image_id=_stripped("dicom_id"), split=_stripped("split"))
        for block in _csv_blocks(split_path, ["dicom_id", "split"], fix)
    )
    splits = _only(splits, pl.col("image_id").is_first_distinct())
    table = pl.concat(_compact(block) for block in _csv_blocks(metadata_path, columns, fix))
    table = table.with_columns(
        split=table.select("image_id").join(splits, on="image_id", how="left", maintain_order="left")["split"]
    )
    table = table.with_row_index("row", offset=1)
    given = table["split"].drop_nulls().unique()
    bad = given.filter(~given.is_in(list(SPLITS))).sort().head(5).to_list()
    if bad:
        raise DatasetError(
            f"{split_path}: column 'split' has values {bad}; allowed: {list(SPLITS)}. "
            "Use the official split file as is."
        )
    named = pl.col("image_id").is_not_null() & pl.col("patient_id").is_not_null() & pl.col("study_id").is_not_null()
    row_item = pl.coalesce(pl.col("image_id"), pl.format("{} row {}", pl.lit(metadata_path.name), pl.col("row")))
    blank = f"blank dicom_id, subject_id or study_id in {metadata_path.name}"
    rejects = pl.concat(
        [
            table.filter(~named).select(rejects_frame(row_item, _image_path(files), blank)),
            table.filter(named & pl.col("split").is_null()).select(
                rejects_frame(pl.col("image_id"), _image_path(files), f"no row in {split_path.name}")
            ),
        ]
    )
    table = _only(table, named & pl.col("split").is_not_null()).drop("row")
    unknown = table.filter(pl.col("view") == "UNKNOWN")["image_id"].n_unique()
    if unknown:
        log.info("%d image(s) have a ViewPosition other than PA, AP, LATERAL, LL: view UNKNOWN", unknown)
    return table, rejects


def _only(table: pl.DataFrame, keep: pl.Expr) -> pl.DataFrame:
    """`table` filtered by `keep`, not copied when every row is kept (as in MIMIC's own files)."""
    mask = table.select(keep.alias("keep"))["keep"]
    return table if mask.all() else table.filter(mask)


def _compact(metadata: pl.DataFrame) -> pl.DataFrame:
    """The metadata columns ingest keeps: ids, view and size."""
    return metadata.select(
        image_id=_stripped("dicom_id"),
        study_id=pl.concat_str([pl.lit("s"), _stripped("study_id")]),
        patient_id=_stripped("subject_id"),
        # MIMIC's ViewPosition vocabulary is closed: what is not a PA, AP or lateral
        # spelling (decubitus, oblique, "AP AXIAL", blank) is UNKNOWN, not a fault.
        view=canonical_view(pl.col("ViewPosition"), blank="UNKNOWN", unknown="UNKNOWN"),
        width=pl.col("Columns").cast(pl.Float64, strict=False).cast(pl.Int32, strict=False),
        height=pl.col("Rows").cast(pl.Float64, strict=False).cast(pl.Int32, strict=False),
    )


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


def _with_reports(source: Path, studies: pl.DataFrame) -> Iterator[pl.DataFrame]:
    """Yield `studies` CHUNK rows at a time, in order, with report_path, findings, impression and fault.

    Each report is parsed as it is read and its raw text dropped, so memory holds one
    chunk of sections. From a zip, a chunk's members are read in file order.
    """
    patient = pl.col("patient_id")
    member = pl.concat_str(
        [pl.lit("p"), patient.str.slice(0, 2), pl.lit("/p"), patient, pl.lit("/"), pl.col("study_id"), pl.lit(".txt")]
    )
    if source.is_file():
        prefix = f"{source}:files/"
        missing = f"report missing from {source.name}"
        unreadable = f"report unreadable in {source.name} (corrupt member)"
        texts = _zip_texts(source, studies["study_id"].str.slice(1).cast(pl.Int64, strict=False).fill_null(-1))
    else:
        base = source / "files" if (source / "files").is_dir() else source
        prefix, missing, unreadable = f"{base}/", f"report file missing under {base}", "report file unreadable"
        texts = None
    found = 0
    for start in range(0, studies.height, CHUNK):
        chunk = studies.slice(start, CHUNK).with_columns(report_path=pl.concat_str([pl.lit(prefix), member]))
        read = next(texts) if texts is not None else _folder_texts(chunk["report_path"])
        sections = _sections(chunk.height, read)
        found += sections["readable"].count()
        yield (
            chunk.hstack(sections)
            .with_columns(
                fault=pl.when(pl.col("readable").is_null())
                .then(pl.lit(missing))
                .when(~pl.col("readable"))
                .then(pl.lit(unreadable))
            )
            .drop("readable")
        )
    if studies.height and found == 0:
        first = studies.head(1).select(pl.concat_str([pl.lit(prefix), member])).item()
        raise DatasetError(
            f"none of the {studies.height} studies has a report in {source} (looked for {first}); "
            f"download {REPORTS_ZIP} from MIMIC-CXR (PhysioNet) and set dataset.reports to it or to the folder it was "
            "extracted into."
        )


def _sections(height: int, texts: Iterator[tuple[int, str | None]]) -> pl.DataFrame:
    """findings, impression and readable (null: no report) of a chunk from its (row, text) pairs."""
    findings, impression, readable = [None] * height, [None] * height, [None] * height
    for row, text in texts:
        readable[row] = text is not None
        if text is not None:
            findings[row], impression[row] = parse_report_sections(text)
    return pl.DataFrame(
        {"findings": findings, "impression": impression, "readable": readable},
        schema={"findings": pl.String, "impression": pl.String, "readable": pl.Boolean},
    )


def _zip_texts(path: Path, numbers: pl.Series) -> Iterator[Iterator[tuple[int, str | None]]]:
    """For each CHUNK of study `numbers`, yield its (row in chunk, text) pairs; text None if unreadable.

    A chunk's members are read in file order.
    """
    try:
        # zipfile holds ~0.6 kB per member: MIMIC-sized ingest 12 s, peak 480 MiB (benchmarks/datasets.md).
        with zipfile.ZipFile(path) as archive:
            members = _report_members(archive, numbers)
            for start in range(0, len(members), CHUNK):
                chunk = [(row, info) for row, info in enumerate(members[start : start + CHUNK]) if info is not None]
                chunk.sort(key=lambda pair: pair[1].header_offset)
                yield ((row, _member_text(archive, info)) for row, info in chunk)
    # NotImplementedError: a central directory entry asks for a zip version beyond zipfile's.
    except (zipfile.BadZipFile, OSError, NotImplementedError) as error:
        raise DatasetError(f"{path} is not a readable zip ({error}); re-download {REPORTS_ZIP}.") from error


def _report_members(archive: zipfile.ZipFile, numbers: pl.Series) -> list[zipfile.ZipInfo | None]:
    """The member holding each study's report, by study row (None where it has none); a repeated member's first."""
    row_of: dict[int, int] = {}
    for row, number in enumerate(numbers.to_list()):
        row_of.setdefault(number, row)
    members: list[zipfile.ZipInfo | None] = [None] * len(numbers)
    for info in archive.infolist():
        match = REPORT_MEMBER.search(info.filename)
        row = row_of.get(int(match.group(2))) if match else None
        if row is not None and members[row] is None:
            members[row] = info
    return members


def _member_text(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    """The member's text, None if it cannot be read (corrupt, failing its CRC, encrypted)."""
    try:
        data = archive.read(info)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError):
        return None
    return data.decode("utf-8", errors="replace")


def _folder_texts(paths: pl.Series) -> Iterator[tuple[int, str | None]]:
    for row, path in enumerate(paths):
        try:
            yield row, Path(path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError:
            yield row, None


def _labels(path: Path) -> pl.DataFrame | None:
    """The labels contract from the CheXpert CSV, or None when it has no label column.

    Read as text a block at a time (labels_from_columns checks the values): the whole
    file as numbers would be six times the Int8 labels kept.
    """
    prefixed = pl.concat_str([pl.lit("s"), pl.col("study_id").str.strip_chars()])
    fix = "use the CheXpert CSV as PhysioNet ships it."
    blocks = [
        labels_from_columns(block.with_columns(study_id=prefixed), path)
        for block in _csv_blocks(path, ["study_id"], fix, every_column=True)
    ]
    return None if blocks[0] is None else pl.concat(blocks)
