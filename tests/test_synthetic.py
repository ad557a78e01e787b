import hashlib
from pathlib import Path

import polars as pl

from mtcxr.data.datasets.synthetic import draw_studies, read_synthetic, report_sections
from mtcxr.data.text import section_expr, section_text
from mtcxr.tables import validate_table

CFG = {"synthetic": {"n_studies": 300, "n_patients": 200, "image_size": 64, "lateral_fraction": 0.4}}


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("*.png")))).hexdigest()


def test_generator_is_deterministic_by_seed(tmp_path):
    first = read_synthetic(CFG, "both", 7, tmp_path / "a")
    again = read_synthetic(CFG, "both", 7, tmp_path / "b")
    other = read_synthetic(CFG, "both", 8, tmp_path / "c")
    assert first.studies.equals(again.studies) and first.labels.equals(again.labels)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert not first.studies["report"].equals(other.studies["report"])


def test_tables_meet_contracts_and_splits_are_by_patient(tmp_path):
    result = read_synthetic(CFG, "both", 0, tmp_path)
    for name, table in (("studies", result.studies), ("images", result.images), ("labels", result.labels)):
        validate_table(table, name)
    assert result.studies.height == 300 and result.studies["patient_id"].n_unique() == 200
    assert result.studies.group_by("patient_id").agg(pl.col("split").n_unique()).filter(pl.col("split") > 1).height == 0
    frontal = result.images.filter(pl.col("view").is_in(["PA", "AP"]))
    assert frontal.height == 300 and frontal["study_id"].n_unique() == 300
    assert all(Path(path).is_file() for path in result.images["path"])
    # The embedded text is the report-text rule's (mtcxr.data.text) for the section asked for.
    assert result.studies["report"].equals(result.studies.select(section_expr("both").alias("report"))["report"])


def test_normal_share_and_labels_follow_the_text(tmp_path):
    result = read_synthetic(
        {"synthetic": {**CFG["synthetic"], "n_studies": 1500, "n_patients": 1000}}, "both", 0, tmp_path
    )
    normal = 1 - result.labels["abnormal"].mean()
    assert 0.33 <= normal <= 0.45
    table = result.studies.join(result.labels, on="study_id")
    negated = table.filter(pl.col("report").str.contains("No pleural effusion."))
    assert negated.height > 50 and (negated["pleural_effusion"] == 0).all()
    hedged = table.filter(pl.col("report").str.contains("(?i)possible [a-z ]*pleural effusion"))
    assert hedged.height > 0 and (hedged["pleural_effusion"] == -1).all()
    sided = table.filter(
        pl.col("findings").str.contains("left pleural effusion")
        & ~pl.col("report").str.contains("(?i)possible|cannot be excluded|may represent|questionable")
    )
    assert sided.height > 0 and (sided["pleural_effusion"] == 1).all()
    assert (table.filter(pl.col("no_finding") == 1)["abnormal"] == False).all()  # noqa: E712


def test_the_demo_draw_has_two_studies_whose_impression_repeats_the_findings():
    # The demo's draw (config.yaml: 1500 studies, 1000 patients, seed 0); no image is rendered.
    sections = [report_sections(study) for study in draw_studies(1500, 1000, 0, 0.4, "syn-")]
    same = [findings for findings, impression in sections if findings == impression]
    assert same == [
        "Large left pleural effusion with blunting of the costophrenic angle.",
        "Perihilar haziness consistent with pulmonary edema.",
    ]
    assert section_text(same[0], same[0], "both") == same[0]  # kept once in the embedded text
