"""The report-text rule (mtcxr.data.text): one rule, the same in plain Python and in polars."""

import numpy as np
import polars as pl
import pytest

from mtcxr.data.datasets.errors import DatasetError
from mtcxr.data.text import (
    DEIDENTIFIED,
    IU_TOKEN,
    PLACEHOLDER,
    REPORT,
    SECTIONS,
    WHITESPACE,
    check_section,
    clean_text,
    dedupe_reports,
    has_sections,
    iu_to_placeholder,
    normalize_report,
    section_expr,
    section_text,
)

# (findings, impression, report) rows that have tripped a section rule: missing, blank, identical, whitespace variants.
TRICKY = [
    ("No effusion.", "Normal chest.", "R"),
    (None, None, None),
    ("", "   ", "\n"),
    (None, "Normal chest.", "Normal chest."),
    ("No effusion.", None, " R "),
    ("  No effusion. ", "\tNormal chest.\n", ""),
    ("Cardiomegaly.", "Cardiomegaly.", "Cardiomegaly."),
    ("Mild  cardiomegaly.\n", " Mild cardiomegaly.", None),
    ("Mild\ncardiomegaly.", "Mild \u00a0 cardiomegaly.", None),
    ("Mild cardiomegaly.", "mild cardiomegaly.", None),  # case differs: two texts
    ("Mild cardiomegaly.", "Mild cardiomegaly", None),  # punctuation differs: two texts
    ("\u3000No effusion.\u2029", "\x85", None),
    ("\x1fNo effusion.", "No effusion.", None),  # \x1f is no whitespace to polars: kept, and the texts differ
    ("Line ___ placed.", "XXXX", "x"),
]


def table(rows=TRICKY) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"findings": pl.String, "impression": pl.String, "report": pl.String}, orient="row"
    )


def test_the_rule_by_section():
    assert section_text("A.", "B.", "findings") == "A."
    assert section_text("A.", "B.", "impression") == "B."
    assert section_text("A.", "B.", "both") == "A. B."
    assert section_text("  A.\n", "\tB. ", "both") == "A. B."  # parts stripped, joined by one space
    assert section_text("A.", None, "impression") is None
    assert section_text(None, "B.", "both") == "B."
    assert section_text("  ", "", "both") is None
    assert section_text("A.", "B.", REPORT, report="  Whole report. ") == "Whole report."
    assert section_text("A.", "B.", REPORT) is None


def test_an_impression_identical_to_the_findings_is_kept_once():
    assert section_text("Cardiomegaly.", "Cardiomegaly.", "both") == "Cardiomegaly."
    # Identical once whitespace is normalised: the findings' own text is kept.
    assert section_text("Mild  cardiomegaly.", "Mild\ncardiomegaly. ", "both") == "Mild  cardiomegaly."
    # Any other difference is a second text.
    assert section_text("Cardiomegaly.", "cardiomegaly.", "both") == "Cardiomegaly. cardiomegaly."
    assert section_text("Cardiomegaly.", "Cardiomegaly", "both") == "Cardiomegaly. Cardiomegaly"


def test_python_and_polars_agree_on_tricky_inputs():
    frame = table()
    for section in (*SECTIONS, REPORT):
        expected = [section_text(f, i, section, report=r) for f, i, r in TRICKY]
        assert frame.select(section_expr(section).alias("text"))["text"].to_list() == expected, section
    both = frame.select(section_expr("both").alias("text"))["text"].to_list()
    assert both == [
        "No effusion. Normal chest.",
        None,
        None,
        "Normal chest.",
        "No effusion.",
        "No effusion. Normal chest.",
        "Cardiomegaly.",
        "Mild  cardiomegaly.",
        "Mild\ncardiomegaly.",
        "Mild cardiomegaly. mild cardiomegaly.",
        "Mild cardiomegaly. Mild cardiomegaly",
        "No effusion.",
        "\x1fNo effusion. No effusion.",
        "Line ___ placed. XXXX",
    ]


def test_python_and_polars_strip_the_same_characters():
    # Every character of the Basic Multilingual Plane around a text: the two strip exactly the same ones.
    characters = [chr(code) for code in range(0x10000) if not 0xD800 <= code < 0xE000]
    padded = [f"{c}A.{c}" for c in characters]
    frame = pl.DataFrame({"findings": padded, "impression": [f"A.{c}{c}" for c in characters]})
    for section in ("findings", "both"):
        got = frame.select(section_expr(section).alias("text"))["text"].to_list()
        assert got == [section_text(f, i, section) for f, i in zip(frame["findings"], frame["impression"])]
    stripped = {c for c, text in zip(characters, padded) if section_text(text, None, "findings") == "A."}
    assert stripped == set(WHITESPACE) and len(WHITESPACE) == 25


def test_a_section_outside_the_rule_is_refused():
    with pytest.raises(ValueError, match="'summary'; choose one of"):
        section_text("A.", "B.", "summary")
    with pytest.raises(ValueError, match="'summary'; choose one of"):
        section_expr("summary")
    check_section("both")
    with pytest.raises(
        DatasetError, match=r"text.section is 'report'; choose one of \['findings', 'impression', 'both'\]"
    ):
        check_section(REPORT)  # the whole report is generation's fallback, never an embedded section


def test_has_sections():
    assert has_sections(table())
    bare = pl.DataFrame({"findings": [None, "  "], "impression": ["", None], "report": ["R", "S"]})
    assert not has_sections(bare)
    assert not has_sections(bare.clear())


def test_clean_text_collapses_whitespace_and_blanks_to_null():
    frame = pl.DataFrame({"text": ["  Heart\n\nsize   normal. ", " \t", None]})
    assert frame.select(clean_text("text"))["text"].to_list() == ["Heart size normal.", None, None]


def test_deidentification_tokens():
    assert PLACEHOLDER == "___" and IU_TOKEN == "XXXX"
    frame = pl.DataFrame(
        {"text": ["Seen on x-XXXX at XXXX.", "Dr. XXXX, XXXX at XXXX called.", "Since 4XXXX XXXXPM.", "XXXX XXXX"]}
    )
    assert frame.select(iu_to_placeholder(pl.col("text")))["text"].to_list() == [
        "Seen on x-ray at ___.",
        "Dr. ___ at ___ called.",  # "XXXX, XXXX" is one run: one mark
        "Since 4___PM.",  # tokens glued to text and to each other: one mark
        "___",
    ]
    # Generation drops either mark (MIMIC-CXR's, or an IU token left in) to see whether a text says anything.
    assert DEIDENTIFIED.sub(" ", "___ ,XXX. ____") == "  , .  "
    assert DEIDENTIFIED.sub(" ", "Line _ placed XX.") == "Line _ placed XX."


def test_normalisation_key_and_dedupe():
    assert normalize_report("  No acute\n cardiopulmonary PROCESS. ") == "no acute cardiopulmonary process"
    assert normalize_report("Heart size normal; lungs clear.") == normalize_report("heart size normal lungs clear")
    assert normalize_report("Line ___ placed.") == "line ___ placed"  # `_` is a word character: the mark stays
    first, of_study = dedupe_reports(["No effusion.", "Cardiomegaly.", "no  effusion", "Cardiomegaly!", "Edema."])
    assert first == [0, 1, 4]
    np.testing.assert_array_equal(of_study, [0, 1, 0, 1, 2])
    first, of_study = dedupe_reports([])
    assert first == [] and of_study.shape == (0,)


def test_ingest_and_generation_compose_by_the_rule():
    from mtcxr.data.datasets.assembly import study_reasons
    from mtcxr.generation.generate import reference_texts

    frame = table()
    for section in (*SECTIONS, REPORT):
        expected = [section_text(f, i, section, report=r) for f, i, r in TRICKY]
        assert reference_texts(frame, section).to_list() == expected, section
    # Identical sections: once in ingest's embedded text and, as of this rule, in generation's reference too.
    same = pl.DataFrame({"study_id": ["s1"], "findings": ["Cardiomegaly."], "impression": ["Cardiomegaly."]})
    per_study = pl.DataFrame({"study_id": ["s1"], "_images": [1], "_allowed": [1], "_views": ["PA"]})
    ingested = study_reasons(same, per_study, text_section="both", views=["PA"], source="reports.csv")
    assert ingested["report"].to_list() == ["Cardiomegaly."] and ingested["_reason"].to_list() == [None]
    assert reference_texts(same, "both").to_list() == ["Cardiomegaly."]
