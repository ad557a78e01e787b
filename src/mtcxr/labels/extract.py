"""Report labels: `mtcxr label` (`label_file`) and the Snakemake stage `extract_labels`.

The labeler itself is `mtcxr.labels`: the terms and cues in `mtcxr.labels.vocabulary`, the
reading of reports (`label_reports`, re-exported here) in `mtcxr.labels.engine`. This module reads
and writes the tables around it and compares extracted labels with a dataset's (`agreement_table`).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import logging
import zlib
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr.errors import InputError
from mtcxr.labels.engine import decode_masks, label_reports, report_masks
from mtcxr.tables import CHEXPERT_DISPLAY, CHEXPERT_LABELS, CONTRACTS, LABEL_SOURCES, read_table, write_table

__all__ = [
    "AGREEMENT_SCHEMA",
    "agreement_table",
    "decode_masks",
    "extract_labels",
    "label_file",
    "label_reports",
    "report_masks",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Files

# How to fix a malformed CSV, said once for every parse fault.
_QUOTING_FIX = (
    "a field holding the separator, a double quote or a line break must be enclosed in double quotes, "
    'with each quote inside it doubled (""); re-export the file with standard CSV quoting'
)
_SHOWN_IDS = 5  # repeated or blank ids quoted in a message


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message (polars adds pages of advice below it)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _raw_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in .gz."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix.lower() == ".gz" else data
    except (OSError, EOFError, zlib.error) as error:
        reason = _first_line(error)
        raise InputError(f"{path}: cannot be read ({reason}); check the file is complete and readable") from None


def _decode(path: Path, data: bytes, encoding: str) -> str:
    """Decode `data` strictly; InputError naming the first bad byte, its line and the fix."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        if codecs.lookup(encoding).name == "utf-8":
            plain = path.name.removesuffix(".gz").removesuffix(".GZ")
            converted = path.with_name(f"{Path(plain).stem}.utf8{Path(plain).suffix}")
            iconv = "iconv -f latin1 -t utf-8"
            source = f"gunzip -c {path} | {iconv}" if plain != path.name else f"{iconv} {path}"
            fix = f"rerun with --encoding latin-1 (or cp1252), or convert the file: {source} > {converted}"
        else:
            fix = "give the file's encoding with --encoding"
        raise InputError(
            f"{path}: not valid {encoding}: byte 0x{data[error.start]:02x} on line {line} cannot be decoded; {fix}"
        ) from None
    except LookupError:  # a codec that is not text-to-bytes, such as rot13 or hex
        raise InputError(
            f"--encoding {encoding!r} is not a text encoding; give e.g. utf-8, latin-1 or cp1252"
        ) from None


def _csv_fault(text: str, separator: str) -> str | None:
    """Where the first malformed record of a CSV text starts and what is wrong there, or None."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, strict=True)
    width, start = None, 1
    try:
        for row in reader:
            if row and width is None:
                width = len(row)
            elif row and len(row) != width:
                return f"line {start} has {len(row)} fields where the header has {width}"
            start = reader.line_num + 1
    except csv.Error as error:
        if "end of data" in str(error):
            return f"the quoted field starting on line {start} is never closed"
        return f"the record starting on line {start} is malformed ({error})"
    return None


def _read_csv(path: Path, id_column: str, text_column: str, encoding: str) -> pl.DataFrame:
    """Read the id and text columns of a CSV (or TSV, optionally gzipped), every column as text."""
    separator = "\t" if ".tsv" in [suffix.lower() for suffix in path.suffixes] else ","
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(
            f"--encoding {encoding!r} is not a known text encoding; give e.g. utf-8, latin-1 or cp1252"
        ) from None
    # polars reads UTF-8 itself (checking it as it goes); anything else is decoded here first.
    source = path if codec == "utf-8" else _decode(path, _raw_bytes(path), encoding).encode()
    try:
        columns = pl.read_csv(source, n_rows=0, separator=separator).columns
        _check_columns(path, columns, id_column, text_column)
        # Every column is read as text, so that ids keep their leading zeros.
        return pl.read_csv(
            source, columns=list(dict.fromkeys([id_column, text_column])), separator=separator, infer_schema=False
        )
    except pl.exceptions.NoDataError:
        raise InputError(
            f"{path}: no header row (the file is blank); give a CSV whose first line names the columns"
        ) from None
    except pl.exceptions.PolarsError as error:
        # Re-read with Python's strict reader to say where the file goes wrong: polars does not.
        text = _decode(path, _raw_bytes(path), encoding)
        where = _csv_fault(text, separator) or _first_line(error)
        raise InputError(f"{path}: not a well-formed CSV: {where}; {_QUOTING_FIX}") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({_first_line(error)})") from None


def _check_columns(path: Path, columns: list[str], id_column: str, text_column: str) -> None:
    """KeyError naming the id or text column when the file has no such column."""
    missing = [column for column in (id_column, text_column) if column not in columns]
    if missing:
        raise KeyError(
            f"{path}: no column {', '.join(repr(column) for column in missing)}; "
            f"the columns there are {columns}. Choose them with --id-column and --text-column."
        )


def _read_reports(input_path: Path, id_column: str, text_column: str, encoding: str = "utf-8") -> pl.DataFrame:
    """Read the id and text columns of a CSV or Parquet file, the text as a String column.

    CSV text (and Binary Parquet text) is decoded strictly as `encoding`; a fault of the file is a
    InputError naming it and the fix.
    """
    if not input_path.is_file():
        raise FileNotFoundError(f"{input_path}: no such file; give a CSV or Parquet file of reports.")
    if input_path.stat().st_size == 0:
        raise InputError(
            f"{input_path}: empty file (0 bytes); give a CSV or Parquet file whose header names the id and text columns"
        )
    suffixes = [suffix.lower() for suffix in input_path.suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        try:
            columns = list(pl.read_parquet_schema(input_path))
            _check_columns(input_path, columns, id_column, text_column)
            frame = pl.read_parquet(input_path, columns=list(dict.fromkeys([id_column, text_column])))
        except (OSError, pl.exceptions.PolarsError) as error:
            raise InputError(
                f"{input_path}: not a readable Parquet file ({_first_line(error)}); "
                "check it is complete, or give the reports as CSV"
            ) from None
    elif suffixes and (suffixes[-1] in (".csv", ".tsv") or suffixes[-2:] in ([".csv", ".gz"], [".tsv", ".gz"])):
        frame = _read_csv(input_path, id_column, text_column, encoding)
    else:
        raise ValueError(f"{input_path}: unsupported file type; give a .csv, .tsv or .parquet file.")
    text = frame[text_column]
    if text.dtype == pl.Binary:
        values = []
        for row, raw in enumerate(text):
            try:
                values.append(None if raw is None else raw.decode(encoding))
            except (UnicodeDecodeError, LookupError) as error:
                raise InputError(
                    f"{input_path}: the text of row {row + 1} ({frame[id_column][row]!r}) is not valid "
                    f"{encoding} ({error}); give the file's encoding with --encoding"
                ) from None
        text = pl.Series(text_column, values, dtype=pl.String)
    elif text.dtype != pl.String:
        try:
            text = text.cast(pl.String)
        except pl.exceptions.PolarsError:
            raise InputError(
                f"{input_path}: column {text_column!r} holds {text.dtype}, not report text; "
                "choose the text column with --text-column"
            ) from None
    return frame.with_columns(text.alias(text_column))


def _check_unique_ids(reports: pl.DataFrame, input_path: Path, id_column: str) -> None:
    """InputError naming up to five repeated ids and how often each occurs."""
    repeated = reports.group_by(id_column, maintain_order=True).len().filter(pl.col("len") > 1)
    if repeated.height:
        shown = ", ".join(f"{value!r} ({count} times)" for value, count in repeated.head(_SHOWN_IDS).iter_rows())
        more = f" and {repeated.height - _SHOWN_IDS} more" if repeated.height > _SHOWN_IDS else ""
        raise InputError(
            f"{input_path}: {repeated.height} id(s) in column {id_column!r} occur more than once: {shown}{more}; "
            "make the id column unique (one row per report: drop repeated rows or join their texts), "
            "or choose another --id-column"
        )


def label_file(
    input_path: str | Path,
    id_column: str,
    text_column: str,
    output_path: str | Path,
    progress: bool = True,
    encoding: str = "utf-8",
) -> pl.DataFrame:
    """Label the reports of a CSV or Parquet file; write and return id + 14 labels + `abnormal`.

    A null, NaN or blank text gets all 14 labels null (not mentioned) and `abnormal` null, since an
    empty report says nothing about its study; one warning counts them. (`label_reports`, which the
    extract_labels stage uses, leaves such a study abnormal; ingest never hands the stage one.)
    Raises FileNotFoundError for a missing input, KeyError naming a missing column (and listing the
    columns there are), ValueError for an unsupported file type, and InputError naming the file and
    the fix for an empty or malformed file, text that is not `encoding`, repeated ids, or an output
    that cannot be written.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.is_dir():
        raise InputError(
            f"-o {output_path} is a folder; give the output Parquet file's name, e.g. {output_path / 'labels.parquet'}"
        )
    reports = _read_reports(input_path, id_column, text_column, encoding)
    _check_unique_ids(reports, input_path, id_column)
    stripped = pl.col(text_column).str.strip_chars()
    blank = reports.select(stripped.is_null() | stripped.str.to_lowercase().is_in(["", "nan"]))[text_column]
    texts = reports.select(pl.when(blank).then(None).otherwise(pl.col(text_column)).alias(text_column))[text_column]
    # A bar only helps when labelling takes a noticeable time.
    labels = label_reports(texts.to_list(), progress=progress and reports.height >= 50_000)
    labels = labels.with_columns(abnormal=pl.when(blank).then(None).otherwise(pl.col("abnormal")))
    result = pl.concat([reports.select(id_column), labels], how="horizontal")
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        result.write_parquet(output_path)
    except (OSError, pl.exceptions.PolarsError) as error:
        filename = getattr(error, "filename", None)
        reason = f"{error.strerror}: {filename}" if filename else _first_line(error)
        raise InputError(
            f"-o {output_path}: cannot be written ({reason}); give a file path in a writable folder"
        ) from None
    n_blank = int(blank.sum())
    if n_blank:
        ids = ", ".join(repr(value) for value in reports.filter(blank)[id_column].head(_SHOWN_IDS).to_list())
        log.warning(
            "%d report(s) with blank text: labels left unmentioned and abnormal null (%s; ids %s%s)",
            n_blank,
            input_path,
            ids,
            ", …" if n_blank > _SHOWN_IDS else "",
        )
    log.info(
        "labelled %d reports from %s (%d blank) -> %s; %d abnormal",
        result.height,
        input_path,
        n_blank,
        output_path,
        result["abnormal"].sum(),
    )
    return result


# ---------------------------------------------------------------------------------------------
# The extract_labels stage

AGREEMENT_SCHEMA = CONTRACTS["agreement"]


def _binary(values: pl.Series) -> np.ndarray:
    """Int8 1 where positive (1, or -1: uncertain counts as positive), 0 where 0 or null (not mentioned)."""
    # Int8 rather than bool: scikit-learn checks int8 labels about twice as fast.
    return values.fill_null(0).is_in([1, -1]).cast(pl.Int8).to_numpy()


def agreement_table(dataset: pl.DataFrame, extracted: pl.DataFrame) -> pl.DataFrame:
    """Return per-observation agreement of extracted labels with the dataset's, on shared study_ids.

    Each observation is made binary: positive = 1 or -1 (uncertain read as positive, as in the
    U-Ones policy), negative = 0 or null. `agreement` is the share of studies where the two binary
    labels match; `exact_agreement` the share where the 4-valued labels (1, 0, -1, null) match;
    precision/recall/F1 treat the dataset's labels as the reference; `kappa` is Cohen's kappa of
    the binary labels. A score that is undefined (no positives in either, or a constant pair of
    label vectors for kappa) is null.
    """
    # Imported here, not with the module: `mtcxr label` imports this module and needs none of it.
    import warnings

    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import cohen_kappa_score, f1_score, precision_score, recall_score

    joined = dataset.join(extracted, on="study_id", how="inner", suffix="_extracted")
    if not joined.height:
        return pl.DataFrame(schema=AGREEMENT_SCHEMA)
    # An undefined score (0/0) comes back NaN and is stored as null, not as 0 or 1.
    binary = {"pos_label": 1, "zero_division": np.nan}
    rows = []
    for name in CHEXPERT_LABELS:
        reference = _binary(joined[name])
        predicted = _binary(joined[f"{name}_extracted"])
        with warnings.catch_warnings():
            # Kappa of two equal constant vectors is undefined; the null says so, a warning adds nothing.
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            kappa = cohen_kappa_score(reference, predicted, labels=[0, 1], replace_undefined_by=np.nan)
        rows.append(
            {
                "observation": name,
                "display_name": CHEXPERT_DISPLAY[name],
                "n": int(reference.size),
                "dataset_positive": int(reference.sum()),
                "extracted_positive": int(predicted.sum()),
                "agreement": float((reference == predicted).mean()),
                "exact_agreement": float(joined[name].eq_missing(joined[f"{name}_extracted"]).mean()),
                "precision": _defined(precision_score(reference, predicted, **binary)),
                "recall": _defined(recall_score(reference, predicted, **binary)),
                "f1": _defined(f1_score(reference, predicted, **binary)),
                "kappa": _defined(kappa),
            }
        )
    return pl.DataFrame(rows, schema=AGREEMENT_SCHEMA)


def _defined(score: float) -> float | None:
    """A score as a float, None where it is undefined (NaN)."""
    return None if np.isnan(score) else float(score)


def extract_labels(
    studies_path: str | Path,
    dataset_labels_path: str | Path,
    output_labels: str | Path,
    output_agreement: str | Path,
    source: str = "extracted",
) -> pl.DataFrame:
    """Label every study's report; write the labels table and the agreement table; return the labels.

    `source="extracted"`: every row is the labeler's. `source="dataset"`: studies the dataset
    labels keep the dataset's row (source "dataset"), the rest get extracted ones (source
    "extracted"). Whenever the dataset ships labels, `output_agreement` compares the extracted
    labels with them per observation (see `agreement_table`); otherwise it has zero rows.
    """
    if source not in LABEL_SOURCES:
        raise ValueError(f"labels.source is {source!r}; allowed: {list(LABEL_SOURCES)}.")
    studies = read_table(studies_path, "studies")
    dataset = read_table(dataset_labels_path, "labels")
    extracted = pl.concat(
        [studies.select("study_id"), label_reports(studies["report"].to_list(), progress=False)], how="horizontal"
    ).with_columns(source=pl.lit("extracted"))

    unknown = dataset.filter(~pl.col("study_id").is_in(studies["study_id"].implode()))
    if unknown.height:
        log.warning("%d dataset label rows name studies not in %s; ignored", unknown.height, studies_path)
    dataset = dataset.filter(pl.col("study_id").is_in(studies["study_id"].implode()))

    if source == "dataset":
        if not dataset.height:
            log.warning("labels.source is 'dataset' but %s has no labels; using extracted labels", dataset_labels_path)
        kept = dataset.with_columns(source=pl.lit("dataset")).select(extracted.columns)
        rest = extracted.filter(~pl.col("study_id").is_in(kept["study_id"].implode()))
        # Rows in the studies table's order, whichever source they come from.
        order = studies.select("study_id").with_row_index("row")
        labels = pl.concat([kept, rest]).join(order, on="study_id").sort("row").drop("row")
    else:
        labels = extracted
    written = write_table(labels, "labels", output_labels)

    agreement = agreement_table(dataset, extracted) if dataset.height else pl.DataFrame(schema=AGREEMENT_SCHEMA)
    Path(output_agreement).parent.mkdir(parents=True, exist_ok=True)
    write_table(agreement, "agreement", output_agreement)

    counts = written.group_by("source").len().sort("source")
    log.info(
        "labels: %d studies (%s), %d abnormal (%.1f%%)",
        written.height,
        ", ".join(f"{row['source']}={row['len']}" for row in counts.iter_rows(named=True)),
        written["abnormal"].sum(),
        100 * written["abnormal"].mean() if written.height else 0.0,
    )
    if agreement.height:
        for row in agreement.iter_rows(named=True):
            log.info(
                "agreement %-27s n=%d dataset+=%d extracted+=%d agree=%.3f F1=%s kappa=%s",
                row["display_name"],
                row["n"],
                row["dataset_positive"],
                row["extracted_positive"],
                row["agreement"],
                "n/a" if row["f1"] is None else f"{row['f1']:.3f}",
                "n/a" if row["kappa"] is None else f"{row['kappa']:.3f}",
            )
        log.info(
            "agreement macro F1 %.3f, macro kappa %.3f", agreement["f1"].mean() or 0.0, agreement["kappa"].mean() or 0.0
        )
    else:
        log.info("no dataset labels: %s has zero rows", output_agreement)
    return written
