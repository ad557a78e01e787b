import hashlib
from pathlib import Path

import polars as pl
from PIL import Image

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


# ---------------------------------------------------------------------------------------------
# A second site (issue 23): other patients, another acquisition, another phrasing, the same findings


def test_site_b_is_other_patients_with_the_same_kind_of_findings(tmp_path):
    import numpy as np

    small = {"synthetic": {**CFG["synthetic"], "n_studies": 120, "n_patients": 90}}
    a = read_synthetic(small, "both", 0, tmp_path / "a")
    b = read_synthetic({"synthetic": {**small["synthetic"], "site": "b"}}, "both", 0, tmp_path / "b")
    validate_table(b.studies, "studies")
    assert b.studies.height == a.studies.height and set(b.studies["dataset"]) == {"synthetic_b"}
    assert not set(a.studies["patient_id"]) & set(b.studies["patient_id"])  # an external set never leaks
    assert not set(a.images["image_id"]) & set(b.images["image_id"])
    # The same findings at about the same rates (120 studies each: within 0.15 of each other).
    for name in ("cardiomegaly", "pleural_effusion", "no_finding"):
        rate_a, rate_b = (float((labels[name] == 1).mean()) for labels in (a.labels, b.labels))
        assert abs(rate_a - rate_b) < 0.15, name
    # Its own phrasing: the preamble, and none of site a's "There is ..." sentences.
    assert b.studies["findings"].str.starts_with("PA and lateral views of the chest.").all()
    assert not b.studies["report"].str.contains(r"(^|\. )There is").any()
    assert a.studies["report"].str.contains(r"(^|\. )There is").any()

    def pixels(result):
        frontal = result.images.filter(pl.col("view") != "LATERAL")["path"]
        return np.stack([np.asarray(Image.open(path), dtype=np.float64) / 255 for path in frontal])

    # Its own look: brighter blacks, flatter contrast (measured: mean 0.33 -> 0.48, sd 0.24 -> 0.17).
    pa, pb = pixels(a), pixels(b)
    assert pb.mean() > pa.mean() + 0.08 and pb.std() < pa.std() - 0.04
    assert np.percentile(pb, 1) > np.percentile(pa, 1) + 0.1


def test_site_b_phrasing_keeps_every_label():
    """Each sentence is reworded, never re-meant: mtcxr's labeler reads the same 14 labels from both."""
    from mtcxr.labels.engine import label_reports

    studies = draw_studies(400, 300, 5, 0.3, "x-")
    as_a = label_reports([" ".join(report_sections(study, "a")) for study in studies])
    as_b = label_reports([" ".join(report_sections(study, "b")) for study in studies])
    assert as_a.equals(as_b)
    assert (as_a["pleural_effusion"] == 0).sum() > 50 and (as_a["pleural_effusion"] == 1).sum() > 20  # informative


def test_site_a_is_the_demo_data_as_before(tmp_path):
    """Naming site a changes nothing: the demo's tables and image bytes are those of the default."""
    default = read_synthetic(CFG, "both", 3, tmp_path / "default")
    named = read_synthetic({"synthetic": {**CFG["synthetic"], "site": "a"}}, "both", 3, tmp_path / "a")
    assert default.studies.equals(named.studies) and digest(tmp_path / "default") == digest(tmp_path / "a")


def test_unknown_site_is_named():
    import pytest

    with pytest.raises(ValueError, match="dataset.synthetic.site is 'c'"):
        read_synthetic({"synthetic": {**CFG["synthetic"], "site": "c"}}, "both", 0, "/tmp/unused-site-c")
