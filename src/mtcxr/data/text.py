"""Report text, in one place: the section names, the one rule that composes a section's text, the
de-identification tokens, and the key reports are de-duplicated by.

Ingest (the dataset readers and `datasets/assembly.py`), the synthetic dataset, the retrieval index and
report generation all call this module, so a study's text is the same wherever it is chosen
(docs/design.md, Datasets: Report text).

The rule, for a section of a study with `findings` and `impression` texts:

- `findings` / `impression`: that text, stripped; blank or missing is null.
- `both`: findings then impression joined by one space, blank parts dropped; an impression identical to
  the findings once whitespace is normalised (a MIMIC-CXR report under one combined heading gives both
  sections the same text) is kept once. Nothing is null only when both parts are.
- `report` (report generation only): the study's whole `report`, stripped: the reference of a
  collection whose studies have no sections.

`section_text` (plain Python) and `section_expr` (polars) apply it and agree on every input.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

SECTIONS = ("findings", "impression", "both")  # `text.section` and `generation.reference`
REPORT = "report"  # the whole report: generation's reference for a collection without sections

# Unicode White_Space: the characters polars' `str.strip_chars()` and regex `\s` treat as whitespace.
# Python's `str.strip()` also strips \x1c-\x1f, so the plain-Python rule names the set to agree with polars.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
_WHITESPACE_RUN = re.compile("[" + re.escape(WHITESPACE) + "]+")

# De-identification. MIMIC-CXR marks removed text `___`; IU X-ray marks it `XXXX`, and its reader rewrites
# every run of those to `___` (`iu_to_placeholder`), so both datasets mark removed text the same way.
PLACEHOLDER = "___"
IU_TOKEN = "XXXX"
IU_TOKEN_RUN = r"X{4,}(?:[\s,/-]*X{4,})*"  # "XXXX", "XXXX, XXXX at XXXX"; no word boundaries: "4XXXX", "XXXXPM"
IU_XRAY = r"\b([xX])-XXXX\b"  # "x-XXXX": the de-identifier took "ray" for a name
# Either mark as it may be left in a report's text: a text made of nothing else says nothing.
DEIDENTIFIED = re.compile(r"_{2,}|X{3,}")


def check_section(text_section: str) -> None:
    """Raise DatasetError unless `text.section` is findings, impression or both."""
    if text_section not in SECTIONS:
        # Imported here: the datasets package imports this module.
        from mtcxr.data.datasets.errors import DatasetError

        raise DatasetError(f"text.section is {text_section!r}; choose one of {list(SECTIONS)}.")


def clean_text(column: str | pl.Expr) -> pl.Expr:
    """Collapse runs of whitespace (report line wraps) to one space; blank text becomes null."""
    expr = pl.col(column) if isinstance(column, str) else column
    expr = expr.str.replace_all(r"\s+", " ").str.strip_chars()
    return pl.when(expr.str.len_chars() > 0).then(expr).otherwise(None)


def iu_to_placeholder(text: pl.Expr) -> pl.Expr:
    """IU X-ray text with `x-XXXX` restored to `x-ray` and every other run of `XXXX` tokens one `___`, cleaned."""
    text = text.str.replace_all(IU_XRAY, "${1}-ray")
    return clean_text(text.str.replace_all(IU_TOKEN_RUN, PLACEHOLDER))


def _check(section: str) -> None:
    if section not in (*SECTIONS, REPORT):
        raise ValueError(f"report section is {section!r}; choose one of {[*SECTIONS, REPORT]}")


def _part(text: str | None) -> str | None:
    text = (text or "").strip(WHITESPACE)
    return text or None


def _squeezed(text: str) -> str:
    return _WHITESPACE_RUN.sub(" ", text)


def section_text(findings: str | None, impression: str | None, section: str, report: str | None = None) -> str | None:
    """The text of `section` (findings, impression, both, or the whole `report`) by the rule; None when blank."""
    _check(section)
    if section == REPORT:
        return _part(report)
    findings, impression = _part(findings), _part(impression)
    if section == "findings":
        return findings
    if section == "impression":
        return impression
    if findings is not None and impression is not None and _squeezed(findings) == _squeezed(impression):
        return findings
    return " ".join(part for part in (findings, impression) if part is not None) or None


def _part_expr(column: str) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    return pl.when(text.str.len_chars() > 0).then(text)


def section_expr(
    section: str, findings: str = "findings", impression: str = "impression", report: str = "report"
) -> pl.Expr:
    """`section_text` as a polars expression over the columns named `findings`, `impression` and `report`."""
    _check(section)
    if section == REPORT:
        return _part_expr(report)
    first, second = _part_expr(findings), _part_expr(impression)
    if section == "findings":
        return first
    if section == "impression":
        return second
    joined = pl.concat_str([first, second], separator=" ", ignore_nulls=True)
    # A null comparison (a part missing) is false: the parts are joined, the missing one dropped.
    same = first.str.replace_all(r"\s+", " ") == second.str.replace_all(r"\s+", " ")
    return pl.when(same).then(first).when(joined.str.len_chars() > 0).then(joined)


def has_sections(studies: pl.DataFrame) -> bool:
    """Whether any study has a findings or impression text (a collection read from a bare `report` has none)."""
    return bool(studies.select(pl.any_horizontal(_part_expr(part).is_not_null().any() for part in SECTIONS[:2])).item())


def normalize_report(text: str) -> str:
    """Lower-case, collapse whitespace and strip punctuation: the key used to deduplicate reports."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def dedupe_reports(reports: list[str]) -> tuple[list[int], np.ndarray]:
    """Return (first study index of each distinct report, distinct-report index of every study)."""
    first, of_study, seen = [], np.empty(len(reports), dtype=np.int64), {}
    for i, report in enumerate(reports):
        key = normalize_report(report)
        if key not in seen:
            seen[key] = len(first)
            first.append(i)
        of_study[i] = seen[key]
    return first, of_study
