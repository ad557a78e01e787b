"""The report labeler: every observation positive/negated/uncertain, cue scopes, sentence splitting,
de-identification tokens, No Finding, reading the term regexes, files and CLI, the extract_labels
stage and its agreement table, and real IU reports."""

from __future__ import annotations

import math
import random
import re
import warnings
from pathlib import Path

import polars as pl
import pytest

from mtcxr.cli import main
from mtcxr.errors import InputError
from mtcxr.labels import engine, regex_subset
from mtcxr.labels.extract import AGREEMENT_SCHEMA, agreement_table, extract_labels, label_file, label_reports
from mtcxr.labels.vocabulary import TERMS
from mtcxr.tables import CHEXPERT_LABELS, LABELS_SCHEMA, empty_table, write_table

IU_XRAY = Path(__file__).resolve().parents[2] / "shared/data/iu_xray"


def labels_of(text: str | None) -> dict:
    """The labeler's output for one text, as a dict (14 observations + abnormal)."""
    return label_reports([text]).row(0, named=True)


def mentioned(text: str) -> dict:
    """Only the observations the text mentions (non-null), without no_finding and abnormal."""
    row = labels_of(text)
    return {name: value for name, value in row.items() if name in CHEXPERT_LABELS[1:] and value is not None}


# (observation, positive sentence, negated sentence, uncertain sentence)
OBSERVATION_SENTENCES = [
    (
        "enlarged_cardiomediastinum",
        "The mediastinum is widened.",
        "The mediastinal contours are normal.",
        "Possible widening of the mediastinum.",
    ),
    ("cardiomegaly", "Moderate cardiomegaly.", "Heart size is normal.", "Borderline cardiomegaly."),
    (
        "lung_opacity",
        "Patchy opacity in the right lower lung.",
        "No focal airspace opacity.",
        "Questionable opacity at the left base.",
    ),
    (
        "lung_lesion",
        "A 1.5 cm nodule in the right upper lobe.",
        "No pulmonary nodules.",
        "Possible nodule in the left apex.",
    ),
    ("edema", "Mild interstitial pulmonary edema.", "No pulmonary edema.", "Findings may represent mild edema."),
    (
        "consolidation",
        "Dense consolidation in the left lower lobe.",
        "No focal consolidation.",
        "Consolidation cannot be excluded.",
    ),
    ("pneumonia", "Right lower lobe pneumonia.", "No evidence of pneumonia.", "Findings are suspicious for pneumonia."),
    ("atelectasis", "Bibasilar atelectasis.", "There is no atelectasis.", "Probable subsegmental atelectasis."),
    (
        "pneumothorax",
        "Small right apical pneumothorax.",
        "Pneumothorax is not seen.",
        "Questionable tiny left pneumothorax.",
    ),
    ("pleural_effusion", "Small left pleural effusion.", "No pleural effusion.", "Possible small right effusion."),
    ("pleural_other", "Right apical pleural thickening.", "No pleural thickening.", "Possible pleural plaque."),
    (
        "fracture",
        "Acute fracture of the right sixth rib.",
        "No acute displaced rib fracture.",
        "Questionable fracture of the left clavicle.",
    ),
    (
        "support_devices",
        "Endotracheal tube terminates 4 cm above the carina.",
        "The chest tube has been removed.",
        "Possible retained catheter fragment.",
    ),
]


@pytest.mark.parametrize(("name", "positive", "negated", "uncertain"), OBSERVATION_SENTENCES)
def test_every_observation_positive_negated_uncertain(name: str, positive: str, negated: str, uncertain: str) -> None:
    assert mentioned(positive) == {name: 1}
    assert mentioned(negated) == {name: 0}
    assert mentioned(uncertain) == {name: -1}


def test_word_forms_and_synonyms() -> None:
    assert mentioned("Bilateral pleural effusions.") == {"pleural_effusion": 1}
    assert mentioned("No pneumothoraces.") == {"pneumothorax": 0}
    assert mentioned("The heart is enlarged.") == {"cardiomegaly": 1}
    assert mentioned("Enlargement of the cardiac silhouette.") == {"cardiomegaly": 1}
    assert mentioned("Left lower lobe collapse.") == {"atelectasis": 1}
    assert mentioned("Right basilar airspace disease.") == {"lung_opacity": 1}
    assert mentioned("Right PICC line with tip in the SVC.") == {"support_devices": 1}
    assert mentioned("Multiple rib fractures.") == {"fracture": 1}
    # A pericardial effusion is not a pleural effusion.
    assert mentioned("Small pericardial effusion.") == {}


def test_negation_before_mention_reaches_through_lists() -> None:
    assert mentioned("No pneumothorax, pleural effusion, or focal consolidation.") == {
        "pneumothorax": 0,
        "pleural_effusion": 0,
        "consolidation": 0,
    }
    assert mentioned("Negative for pneumothorax, pleural effusion.") == {"pneumothorax": 0, "pleural_effusion": 0}
    assert mentioned("The lungs are clear without focal consolidation or edema.") == {"consolidation": 0, "edema": 0}


def test_negation_after_mention() -> None:
    assert mentioned("Pleural effusion is not identified.") == {"pleural_effusion": 0}
    assert mentioned("Pneumothorax on the right is no longer seen.") == {"pneumothorax": 0}
    assert mentioned("Pulmonary edema has resolved.") == {"edema": 0}


def test_uncertainty_before_and_after_mention() -> None:
    assert mentioned("Left basilar opacity may represent atelectasis or pneumonia.") == {
        "lung_opacity": 1,
        "atelectasis": -1,
        "pneumonia": -1,
    }
    assert mentioned("Pneumothorax cannot be excluded.") == {"pneumothorax": -1}
    assert mentioned("A small effusion is suspected.") == {"pleural_effusion": -1}
    assert mentioned("Scarring versus atelectasis at the left base.") == {"atelectasis": -1}
    # "Can not exclude" is uncertain, not a negation because it contains "not".
    assert mentioned("Can not exclude a small pneumothorax.") == {"pneumothorax": -1}
    # Negation wins over a hedge word inside its scope ("no suspicious nodules").
    assert mentioned("No suspicious pulmonary nodules.") == {"lung_lesion": 0}


def test_scope_ends_at_clause_break_and_new_statement() -> None:
    assert mentioned("No pneumothorax, but there is a small left pleural effusion.") == {
        "pneumothorax": 0,
        "pleural_effusion": 1,
    }
    assert mentioned("No pleural effusion, mild cardiomegaly.") == {"pleural_effusion": 0, "cardiomegaly": 1}
    assert mentioned("Possible pneumonia, no effusion.") == {"pneumonia": -1, "pleural_effusion": 0}
    # The hedge stays in its clause.
    assert mentioned("Heart size is normal although there is possible edema.") == {"cardiomegaly": 0, "edema": -1}


def test_sentence_splitting() -> None:
    # Sentence ends stop cues; decimals, "vs." and single line wraps do not split.
    assert mentioned("No pneumothorax. Small effusion.") == {"pneumothorax": 0, "pleural_effusion": 1}
    assert mentioned("No pneumothorax; small effusion") == {"pneumothorax": 0, "pleural_effusion": 1}
    assert mentioned("FINDINGS: No pneumothorax.\n\nIMPRESSION: Effusion") == {"pneumothorax": 0, "pleural_effusion": 1}
    assert mentioned("No pleural effusion or\npneumothorax.") == {"pleural_effusion": 0, "pneumothorax": 0}
    assert mentioned("Atelectasis vs. pneumonia.") == {"atelectasis": -1, "pneumonia": -1}
    assert mentioned("Possible 1.5 cm nodule.") == {"lung_lesion": -1}
    assert mentioned("No effusion.Mild edema.") == {"pleural_effusion": 0, "edema": 1}


def test_no_change_unchanged_resolved() -> None:
    assert mentioned("No change in the small left pleural effusion.") == {"pleural_effusion": 1}
    assert mentioned("No interval change in cardiomegaly.") == {"cardiomegaly": 1}
    assert mentioned("Unchanged cardiomegaly.") == {"cardiomegaly": 1}
    assert mentioned("Pleural effusion, not significantly changed.") == {"pleural_effusion": 1}
    assert mentioned("The right pleural effusion has resolved.") == {"pleural_effusion": 0}
    assert mentioned("Interval resolution of the left pneumothorax.") == {"pneumothorax": 0}
    assert mentioned("Partially resolved right lower lobe pneumonia.") == {"pneumonia": 1}
    assert mentioned("Resolving pulmonary edema.") == {"edema": 1}


def test_deidentification_tokens() -> None:
    # IU X-ray's XXXX and MIMIC's ___ are unknown words: no mention, no cue, no break.
    assert mentioned("There are no XXXX of a pleural effusion.") == {"pleural_effusion": 0}
    assert mentioned("XXXX XXXX pleural effusions.") == {"pleural_effusion": 1}
    assert mentioned("There is ___ right-sided pleural effusion.") == {"pleural_effusion": 1}
    assert mentioned("No ___ pneumothorax.") == {"pneumothorax": 0}
    assert mentioned("Heart size XXXX normal.") == {"cardiomegaly": 0}
    assert mentioned("Normal chest x-XXXX.") == {}


def test_no_finding() -> None:
    normal = labels_of("Heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.")
    assert normal["no_finding"] == 1 and normal["abnormal"] is False
    # Support devices do not spoil No Finding (CheXpert).
    devices = labels_of("Right IJ catheter tip in the SVC. No acute cardiopulmonary process.")
    assert devices["no_finding"] == 1 and devices["support_devices"] == 1 and devices["abnormal"] is False
    # A positive or an uncertain observation does.
    for text in ("Small left pleural effusion.", "Possible left lower lobe pneumonia."):
        row = labels_of(text)
        assert row["no_finding"] is None and row["abnormal"] is True
    # So does an abnormality outside the 14 classes; a negated one does not.
    other = labels_of("Calcified granuloma. Degenerative changes of the thoracic spine.")
    assert other["no_finding"] is None and other["abnormal"] is True
    assert all(other[name] is None for name in CHEXPERT_LABELS)
    assert labels_of("No hiatal hernia. Lungs are clear.")["no_finding"] == 1


def test_empty_and_null_text() -> None:
    frame = label_reports([None, "", "   \n ", "No pneumothorax."])
    assert frame.columns == [*CHEXPERT_LABELS, "abnormal"]
    assert all(frame.schema[name] == pl.Int8 for name in CHEXPERT_LABELS)
    assert frame.schema["abnormal"] == pl.Boolean
    for row in frame.head(3).iter_rows(named=True):
        assert all(row[name] is None for name in CHEXPERT_LABELS)
        assert row["abnormal"] is True  # nothing shows a normal study
    assert frame.row(3, named=True)["pneumothorax"] == 0
    assert label_reports([]).height == 0


def test_long_report_does_not_crash() -> None:
    sentence = "Small left pleural effusion, no pneumothorax, possible right lower lobe pneumonia. "
    report = sentence * (100_000 // len(sentence) + 1)
    run_on = "no pneumothorax, pleural effusion, " * 3000 + "possible edema"
    assert len(report) > 100_000 and len(run_on) > 100_000
    assert label_reports([report, run_on]).height == 2
    assert mentioned(report) == {"pleural_effusion": 1, "pneumothorax": 0, "pneumonia": -1}
    assert mentioned(run_on) == {"pneumothorax": 0, "pleural_effusion": 0, "edema": -1}


def test_progress_bar_goes_to_stderr(capsys) -> None:
    texts = ["No pneumothorax.", "Small effusion."] * 50
    assert label_reports(texts, progress=True).equals(label_reports(texts))
    captured = capsys.readouterr()
    assert "labelling" in captured.err and "100/100" in captured.err and captured.out == ""


# --- the term regexes, read by mtcxr.labels.regex_subset ---------------------------------------


def sample(node: regex_subset.Node, rng: random.Random | None) -> str:
    """A string the parsed regex matches: a random one, or the shortest when rng is None."""
    kind = node[0]
    if kind == "chars":
        return node[1][0] if rng is None else rng.choice(node[1])
    if kind == "empty":
        return ""
    if kind == "seq":
        return "".join(sample(child, rng) for child in node[1])
    if kind == "alt":
        if rng is None:
            return min((sample(child, None) for child in node[1]), key=len)
        return sample(rng.choice(node[1]), rng)
    _, low, high, body = node
    count = low if rng is None else rng.randint(low, low + 3 if high is None else high)
    return "".join(sample(body, rng) for _ in range(count))


@pytest.mark.parametrize(
    ("pattern", "shortest", "starts"),
    [
        ("fx", 2, {"fx"}),
        ("(?:bi)?hilar", 5, {"bih", "hil"}),
        ("kerley b?(?:-| )?lines?", 11, {"ker"}),
        (r"(?:hypo|under)[- ]?(?:inflat|expan)\w*", 9, {"hyp", "und"}),
        ("a{2}", 2, {"aa"}),
        ("a{,2}b", 1, {"b", "ab", "aab"}),
        ("(?:x?){4,}y", 1, {"y", "xy", "xxy", "xxx"}),
        ("ectasia|ectatic", 7, {"ect"}),
        (r"[a-c\d]", 1, set("abc0123456789")),
        (r"\bab\b", 2, {"ab"}),
        (r"a\.b", 3, {"a.b"}),
    ],
)
def test_regex_subset_shortest_match_and_starts(pattern: str, shortest: int, starts: set[str]) -> None:
    node = regex_subset.parse(pattern)
    assert regex_subset.min_length(node) == shortest
    assert regex_subset.prefixes(node, 3) == starts


@pytest.mark.parametrize(
    "pattern",
    ["(a)", "(?P<x>a)", "(?=a)b", r"a\1", "a*+", "a{2}{3}", "(?i)a", "(?:a", "a)", "*a", "[a", "[z-a]", r"\x41"],
)
def test_regex_subset_rejects_what_it_does_not_read(pattern: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(pattern))):
        regex_subset.parse(pattern)


def test_every_term_is_read_right_and_found_where_it_starts() -> None:
    """Strings a parsed term matches are matched by the term itself (so the parser read it right),
    start with one of its computed starts, and are found by the engine's dispatch at a word start."""
    for regex, _, _ in TERMS:
        node = regex_subset.parse(regex)
        starts = regex_subset.prefixes(node, 3)
        shortest = sample(node, None)
        assert len(shortest) == regex_subset.min_length(node) and re.fullmatch(regex, shortest), regex
        rng = random.Random(regex)
        for text in [shortest, *(sample(node, rng) for _ in range(30))]:
            assert re.fullmatch(regex, text) and text[:3] in starts, (regex, text)
            padded = f" {text} "
            entry = engine._MENTION_DISPATCH.get(padded[1:4])
            assert entry is not None and entry[0].match(padded, 1), (regex, text)


@pytest.fixture()
def reports_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "uid": ["007", "008", "009"],
            "findings": ["Moderate cardiomegaly. No effusion.", None, "Lungs are clear. No pneumothorax."],
        }
    )


def test_cli_label_csv(tmp_path: Path, reports_frame: pl.DataFrame) -> None:
    source, output = tmp_path / "reports.csv", tmp_path / "out" / "labels.parquet"
    reports_frame.write_csv(source)
    assert main(["label", str(source), "--id-column", "uid", "--text-column", "findings", "-o", str(output), "-q"]) == 0
    labels = pl.read_parquet(output)
    assert labels.columns == ["uid", *CHEXPERT_LABELS, "abnormal"]
    assert labels["uid"].to_list() == ["007", "008", "009"]  # ids read as text keep their zeros
    assert labels["cardiomegaly"].to_list() == [1, None, None]
    assert labels["pleural_effusion"].to_list() == [0, None, None]
    assert labels["no_finding"].to_list() == [None, None, 1]
    assert labels["abnormal"].to_list() == [True, None, False]  # a null text says nothing about its study


def test_cli_label_parquet(tmp_path: Path) -> None:
    source, output = tmp_path / "reports.parquet", tmp_path / "labels.parquet"
    pl.DataFrame({"study": [10, 11], "text": ["Possible pneumonia.", "Normal chest."]}).write_parquet(source)
    assert main(["label", str(source), "--id-column", "study", "--text-column", "text", "-o", str(output)]) == 0
    labels = pl.read_parquet(output)
    assert labels.schema["study"] == pl.Int64
    assert labels.select("study", "pneumonia", "no_finding").rows() == [(10, -1, None), (11, None, 1)]


def test_label_file_non_utf8_csv(tmp_path: Path) -> None:
    source, output = tmp_path / "latin1.csv", tmp_path / "labels.parquet"
    source.write_bytes(
        b"uid,report\n1,Caf\xe9 au lait spots; small right pleural effusion \xff\xfe.\n2,No pneumothorax.\n"
    )
    with pytest.raises(InputError, match=r"latin1.csv: not valid utf-8: byte 0xe9 on line 2 .* --encoding latin-1"):
        label_file(source, "uid", "report", output, progress=False)
    assert not output.exists()
    labels = label_file(source, "uid", "report", output, progress=False, encoding="latin-1")
    assert labels.select("uid", "pleural_effusion", "pneumothorax").rows() == [("1", 1, None), ("2", None, 0)]
    assert pl.read_parquet(output).height == 2


def test_cli_missing_column_names_it(tmp_path: Path, reports_frame: pl.DataFrame, capsys) -> None:
    source = tmp_path / "reports.csv"
    reports_frame.write_csv(source)
    code = main(
        ["label", str(source), "--id-column", "uid", "--text-column", "report", "-o", str(tmp_path / "o.parquet")]
    )
    error = capsys.readouterr().err
    assert code == 2
    assert "no column 'report'" in error and "['uid', 'findings']" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "o.parquet").exists()


def test_cli_missing_file(tmp_path: Path, capsys) -> None:
    code = main(
        ["label", str(tmp_path / "nope.csv"), "--id-column", "a", "--text-column", "b", "-o", str(tmp_path / "o")]
    )
    assert code == 2 and "nope.csv: no such file" in capsys.readouterr().err


def write_studies(path: Path, reports: dict[str, str]) -> None:
    write_table(
        pl.DataFrame(
            {
                "study_id": list(reports),
                "patient_id": [f"p{study_id}" for study_id in reports],
                "split": ["train"] * len(reports),
                "findings": list(reports.values()),
                "impression": [None] * len(reports),
                "report": list(reports.values()),
                "dataset": ["test"] * len(reports),
            }
        ),
        "studies",
        path,
    )


REPORTS = {
    "s1": "Small left pleural effusion. Moderate cardiomegaly.",
    "s2": "No pleural effusion. Heart size is normal.",
    "s3": "Lungs are clear.",
    "s4": "Right lower lobe pneumonia.",
}


def test_extract_labels_without_dataset_labels(tmp_path: Path) -> None:
    write_studies(tmp_path / "studies.parquet", REPORTS)
    write_table(empty_table("labels"), "labels", tmp_path / "dataset.parquet")
    labels = extract_labels(
        tmp_path / "studies.parquet",
        tmp_path / "dataset.parquet",
        tmp_path / "labels.parquet",
        tmp_path / "agreement.parquet",
        source="dataset",
    )
    written = pl.read_parquet(tmp_path / "labels.parquet")
    assert written.schema == pl.Schema(LABELS_SCHEMA)
    assert written["study_id"].to_list() == ["s1", "s2", "s3", "s4"]
    assert written["source"].unique().to_list() == ["extracted"]
    assert written["pleural_effusion"].to_list() == [1, 0, None, None]
    assert written["abnormal"].to_list() == [True, False, False, True]
    assert labels.equals(written)
    agreement = pl.read_parquet(tmp_path / "agreement.parquet")
    assert agreement.height == 0 and agreement.schema == pl.Schema(AGREEMENT_SCHEMA)


def test_extract_labels_with_dataset_labels_and_agreement(tmp_path: Path) -> None:
    write_studies(tmp_path / "studies.parquet", REPORTS)
    # The dataset labels s1-s3; its pleural effusion says 1, 0, -1 where the text gives 1, 0, null.
    dataset = pl.DataFrame(
        {
            "study_id": ["s1", "s2", "s3"],
            **{name: [None, None, None] for name in CHEXPERT_LABELS},
        },
        schema={"study_id": pl.String, **{name: pl.Int8 for name in CHEXPERT_LABELS}},
    ).with_columns(
        pleural_effusion=pl.Series([1, 0, -1], dtype=pl.Int8),
        cardiomegaly=pl.Series([1, 0, None], dtype=pl.Int8),
        no_finding=pl.Series([None, None, None], dtype=pl.Int8),
        abnormal=pl.lit(True),
        source=pl.lit("dataset"),
    )
    write_table(dataset, "labels", tmp_path / "dataset.parquet")
    extract_labels(
        tmp_path / "studies.parquet",
        tmp_path / "dataset.parquet",
        tmp_path / "labels.parquet",
        tmp_path / "agreement.parquet",
        source="dataset",
    )
    written = pl.read_parquet(tmp_path / "labels.parquet")
    assert written["study_id"].to_list() == ["s1", "s2", "s3", "s4"]
    assert written["source"].to_list() == ["dataset", "dataset", "dataset", "extracted"]
    assert written["pleural_effusion"].to_list() == [1, 0, -1, None]  # the dataset's value kept for s3
    assert written["pneumonia"].to_list() == [None, None, None, 1]

    agreement = pl.read_parquet(tmp_path / "agreement.parquet")
    assert agreement.schema == pl.Schema(AGREEMENT_SCHEMA)
    assert agreement["observation"].to_list() == list(CHEXPERT_LABELS)
    effusion = agreement.filter(pl.col("observation") == "pleural_effusion").row(0, named=True)
    # Binary (1 or -1 positive): dataset [1, 0, 1], extracted [1, 0, 0].
    assert effusion["display_name"] == "Pleural Effusion"
    assert effusion["n"] == 3 and effusion["dataset_positive"] == 2 and effusion["extracted_positive"] == 1
    assert effusion["agreement"] == pytest.approx(2 / 3)
    assert effusion["exact_agreement"] == pytest.approx(2 / 3)
    assert effusion["precision"] == 1.0 and effusion["recall"] == 0.5
    assert effusion["f1"] == pytest.approx(2 / 3)
    # po = 2/3; pe = (2/3)(1/3) + (1/3)(2/3) = 4/9; kappa = (2/3 - 4/9) / (1 - 4/9) = 0.4
    assert effusion["kappa"] == pytest.approx(0.4)
    cardiomegaly = agreement.filter(pl.col("observation") == "cardiomegaly").row(0, named=True)
    assert (cardiomegaly["agreement"], cardiomegaly["f1"], cardiomegaly["kappa"]) == (1.0, 1.0, 1.0)
    # Nobody positive: F1 and kappa are undefined, not 0 or 1.
    fracture = agreement.filter(pl.col("observation") == "fracture").row(0, named=True)
    assert fracture["agreement"] == 1.0 and fracture["f1"] is None and fracture["kappa"] is None


def test_extract_labels_extracted_source_ignores_dataset_rows(tmp_path: Path) -> None:
    write_studies(tmp_path / "studies.parquet", REPORTS)
    dataset = empty_table("labels").vstack(
        pl.DataFrame(
            {"study_id": ["s4"], **{name: [0] for name in CHEXPERT_LABELS}, "abnormal": [True], "source": ["dataset"]},
            schema=LABELS_SCHEMA,
        )
    )
    write_table(dataset, "labels", tmp_path / "dataset.parquet")
    extract_labels(
        tmp_path / "studies.parquet",
        tmp_path / "dataset.parquet",
        tmp_path / "labels.parquet",
        tmp_path / "agreement.parquet",
        source="extracted",
    )
    written = pl.read_parquet(tmp_path / "labels.parquet")
    assert written["source"].unique().to_list() == ["extracted"]
    assert written.filter(pl.col("study_id") == "s4")["pneumonia"].item() == 1
    pneumonia = pl.read_parquet(tmp_path / "agreement.parquet").filter(pl.col("observation") == "pneumonia")
    assert pneumonia.select("n", "agreement", "precision").row(0) == (1, 0.0, 0.0)


def test_agreement_table_null_semantics() -> None:
    """Where a score is 0/0 it is null; a defined zero stays 0 (kappa too), and nothing warns."""
    ids = [f"s{i}" for i in range(4)]

    def table(columns: dict[str, list[int | None]]) -> pl.DataFrame:
        values = {name: columns.get(name, [None] * 4) for name in CHEXPERT_LABELS}
        return pl.DataFrame(
            {"study_id": ids, **values}, schema={"study_id": pl.String, **{n: pl.Int8 for n in CHEXPERT_LABELS}}
        )

    dataset = table(
        {"edema": [0, 0, 0, 0], "atelectasis": [1, 1, 0, 0], "fracture": [1, 1, 1, 1], "pneumonia": [1, -1, 0, None]}
    )
    extracted = table(
        {"edema": [1, 0, 1, 0], "atelectasis": [None, 0, 0, 0], "fracture": [1, -1, 1, 1], "pneumonia": [0, 1, 1, 0]}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = {row["observation"]: row for row in agreement_table(dataset, extracted).iter_rows(named=True)}
    score = ("precision", "recall", "f1", "kappa")
    # The dataset has no positives: recall undefined; precision, F1 and kappa are 0.
    assert tuple(rows["edema"][name] for name in score) == (0.0, None, 0.0, 0.0)
    # Nothing extracted: precision undefined; recall and F1 are 0.
    assert tuple(rows["atelectasis"][name] for name in score) == (None, 0.0, 0.0, 0.0)
    # Both all positive: perfect, but kappa of two constant vectors is undefined.
    assert tuple(rows["fracture"][name] for name in score) == (1.0, 1.0, 1.0, None)
    # Both all negative (nothing mentioned): everything undefined but agreement.
    assert tuple(rows["cardiomegaly"][name] for name in score) == (None, None, None, None)
    assert rows["cardiomegaly"]["agreement"] == 1.0
    # Dataset [1, 1, 0, 0], extracted [0, 1, 1, 0]: tp 1, fp 1, fn 1; po 1/2, pe 1/2, kappa 0.
    pneumonia = rows["pneumonia"]
    assert (pneumonia["precision"], pneumonia["recall"], pneumonia["f1"]) == (0.5, 0.5, 0.5)
    assert pneumonia["kappa"] == pytest.approx(0.0, abs=1e-12)
    assert pneumonia["exact_agreement"] == 0.0 and pneumonia["agreement"] == 0.5
    assert agreement_table(dataset, extracted.with_columns(study_id=pl.lit("other"))).height == 0


def test_extract_labels_rejects_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels.source"):
        extract_labels(tmp_path / "s", tmp_path / "d", tmp_path / "l", tmp_path / "a", source="gold")


@pytest.mark.realdata
def test_macro_f1_on_real_iu_reports() -> None:
    """Against NegBio's human gold labels on 3,080 real IU X-ray reports (findings + impression)."""
    if not (IU_XRAY / "gold_labels.csv").is_file():
        pytest.skip(f"real IU X-ray reports and gold labels not found at {IU_XRAY}")
    reports = pl.read_csv(IU_XRAY / "indiana_reports.csv", infer_schema=False)
    gold = pl.read_csv(IU_XRAY / "gold_labels.csv", infer_schema=False)
    frame = reports.join(gold, on="uid")
    text = frame.select(
        pl.concat_str([pl.col("findings").fill_null(""), pl.col("impression").fill_null("")], separator="\n\n")
    ).to_series()
    labels = label_reports(text.to_list())
    shared = {
        "Atelectasis": "atelectasis",
        "Cardiomegaly": "cardiomegaly",
        "Effusion": "pleural_effusion",
        "Pneumonia": "pneumonia",
        "Pneumothorax": "pneumothorax",
        "Consolidation": "consolidation",
        "Edema": "edema",
        "normal": "no_finding",
    }
    scores = {}
    for gold_column, name in shared.items():
        truth = frame[gold_column].cast(pl.Int8) == 1
        predicted = labels[name].fill_null(0).is_in([1, -1])  # uncertain counts as positive
        true_positive = (truth & predicted).sum()
        scores[name] = 2 * true_positive / (2 * true_positive + (truth ^ predicted).sum())
    macro = sum(scores.values()) / len(scores)
    assert not any(math.isnan(score) for score in scores.values())
    assert macro >= 0.80, scores
    # Every class is well above chance, not just the common ones.
    assert min(scores.values()) >= 0.45, scores
