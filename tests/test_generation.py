"""Report generation by retrieval (mtcxr.generation.generate) and its scoring stage (mtcxr.generation.score)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mtcxr.errors import InputError
from mtcxr.generation import generate as generation
from mtcxr.generation import nlg
from mtcxr.generation.score import resample_weights, score_generation
from mtcxr.tables import empty_table, read_table, write_table


def java_or_skip() -> str:
    try:
        return nlg.find_java()
    except nlg.JavaMissingError as error:
        pytest.skip(f"no Java here: {error}")


def write_data(folder: Path, studies: list[dict], images: list[dict]) -> tuple[str, str]:
    rows = [{"patient_id": f"p-{s['study_id']}", "impression": None, "dataset": "hand", **s} for s in studies]
    for row in rows:
        row["report"] = " ".join(part for part in (row.get("findings"), row["impression"]) if part) or "empty"
    image_rows = [{"patient_id": f"p-{i['study_id']}", "path": "x.png", "width": 8, "height": 8, **i} for i in images]
    write_table(pl.DataFrame(rows), "studies", folder / "studies.parquet")
    images_table = pl.DataFrame(image_rows) if image_rows else empty_table("images")
    write_table(images_table, "images", folder / "images.parquet")
    return str(folder / "images.parquet"), str(folder / "studies.parquet")


def test_queries_take_the_first_frontal_image_and_reject_what_cannot_be_scored(tmp_path: Path):
    studies = [
        {"study_id": "t1", "split": "test", "findings": "Small left pleural effusion."},
        {"study_id": "t2", "split": "test", "findings": None, "impression": "No acute process."},
        {"study_id": "t3", "split": "test", "findings": "___ ___."},
        {"study_id": "t4", "split": "test", "findings": "Heart size is normal."},
        {"study_id": "r1", "split": "train", "findings": "No pleural effusion."},
    ]
    images = [
        {"image_id": "t1-b", "study_id": "t1", "split": "test", "view": "AP"},
        {"image_id": "t1-a", "study_id": "t1", "split": "test", "view": "PA"},
        {"image_id": "t1-0", "study_id": "t1", "split": "test", "view": "LATERAL"},
        {"image_id": "t2-a", "study_id": "t2", "split": "test", "view": "PA"},
        {"image_id": "t3-a", "study_id": "t3", "split": "test", "view": "PA"},
        {"image_id": "t4-a", "study_id": "t4", "split": "test", "view": "LATERAL"},
        {"image_id": "r1-a", "study_id": "r1", "split": "train", "view": "PA"},
    ]
    images_path, studies_path = write_data(tmp_path, studies, images)
    queries, rejects = generation.generation_queries(images_path, studies_path, "findings")
    assert queries.rows() == [("t1", "t1-a", "Small left pleural effusion.")]
    reasons = dict(rejects.select("item", "reason").iter_rows())
    assert reasons == {
        "t2": "no findings text (generation.reference: findings)",
        "t3": "the findings text holds only de-identification tokens (___ / XXXX)",
        "t4": "no frontal image to query with",
    }
    both, _ = generation.generation_queries(images_path, studies_path, "both")
    assert both.filter(pl.col("study_id") == "t2")["reference"].to_list() == ["No acute process."]


def test_an_image_of_unknown_view_is_the_query_only_where_no_frontal_one_is(tmp_path: Path):
    """A manifest without a view column has only UNKNOWN views: they are queried; a frontal view comes first."""
    studies = [{"study_id": s, "split": "test", "findings": f"Report {s}."} for s in ("t1", "t2", "t3")]
    studies.append({"study_id": "r1", "split": "train", "findings": "No effusion."})
    images = [
        {"image_id": "t1-a", "study_id": "t1", "split": "test", "view": "UNKNOWN"},
        {"image_id": "t1-b", "study_id": "t1", "split": "test", "view": "PA"},
        {"image_id": "t2-a", "study_id": "t2", "split": "test", "view": "UNKNOWN"},
        {"image_id": "t2-b", "study_id": "t2", "split": "test", "view": "UNKNOWN"},
        {"image_id": "t3-a", "study_id": "t3", "split": "test", "view": "LL"},
    ]
    images_path, studies_path = write_data(tmp_path, studies, images)
    queries, rejects = generation.generation_queries(images_path, studies_path, "findings")
    assert queries.select("study_id", "image_id").rows() == [("t1", "t1-b"), ("t2", "t2-a")]
    assert rejects.select("item", "reason").rows() == [("t3", "no frontal image to query with")]


def test_retrieval_generates_for_images_of_unknown_view(tmp_path: Path):
    """A view-less manifest end to end through generate_by_retrieval: the untrained heads retrieve each test
    study's own report text from the train split (the same vectors), so the report comes back exactly."""
    from mtcxr.models.heads import ProjectionHeads, save_heads

    from tiny_tree import project_tree, write_tiny_tree

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    reports = ["Small left pleural effusion.", "Lungs are clear.", "Moderate cardiomegaly.", "No pneumothorax."]
    paths = write_tiny_tree(
        tmp_path, ["train"] * 4 + ["test"] * 4, reports * 2, np.tile(vectors, (2, 1)), np.tile(vectors, (2, 1))
    )
    images = read_table(paths["images"], "images").with_columns(view=pl.lit("UNKNOWN"))
    write_table(images, "images", paths["images"])
    save_heads(ProjectionHeads(16, 8, seed=0), tmp_path / "head.safetensors", tmp_path / "head.json", {})
    projected = project_tree(paths, str(tmp_path / "head.safetensors"), str(tmp_path / "head.json"), tmp_path / "p")
    table = generation.generate_by_retrieval(
        projected,
        generation.QueryTables(paths["images"], paths["studies"]),
        generation.GenerationSettings(reference="findings", choice="top1", k=2),
        str(tmp_path / "retrieval.parquet"),
    )
    retrieval = table.filter(pl.col("method") == "retrieval").sort("study_id")
    assert retrieval["image_id"].to_list() == ["i4", "i5", "i6", "i7"]
    assert retrieval["generated"].to_list() == reports and retrieval["reference"].to_list() == reports


def test_a_query_image_rejected_by_preprocess_is_never_used(tmp_path: Path):
    studies = [
        {"study_id": "t1", "split": "test", "findings": "Cardiomegaly."},
        {"study_id": "t2", "split": "test", "findings": "No effusion."},
    ]
    images = [
        {"image_id": "t1-a", "study_id": "t1", "split": "test", "view": "PA"},
        {"image_id": "t1-b", "study_id": "t1", "split": "test", "view": "AP"},
        {"image_id": "t2-a", "study_id": "t2", "split": "test", "view": "PA"},
    ]
    images_path, studies_path = write_data(tmp_path, studies, images)
    rejects = pl.DataFrame(
        {"item": ["t1-a", "t2-a"], "path": ["x.png"] * 2, "stage": "preprocess_images", "reason": "unreadable"}
    )
    write_table(rejects, "rejects", tmp_path / "pixel_rejects.parquet")
    queries, rejected = generation.generation_queries(
        images_path, studies_path, "findings", [str(tmp_path / "pixel_rejects.parquet")]
    )
    assert queries.select("study_id", "image_id").rows() == [("t1", "t1-b")]
    assert rejected.select("item", "reason").rows() == [
        ("t2", "every frontal image was rejected by preprocess_images (see its rejects)")
    ]


def test_corpus_deduplicates_by_normalised_text_and_counts(tmp_path: Path):
    studies = [
        {"study_id": f"r{i}", "split": "train", "findings": text}
        for i, text in enumerate(["No effusion.", "no effusion", "Cardiomegaly.", "NO EFFUSION!", ""])
    ]
    _, studies_path = write_data(tmp_path, studies, [])
    corpus = generation.train_corpus(studies_path, "findings")
    assert corpus.rows() == [("r0", "No effusion.", 3), ("r2", "Cardiomegaly.", 1)]


def test_baselines_are_seeded_and_most_frequent_is_the_mode(tmp_path: Path):
    train = [
        {"study_id": f"r{i}", "split": "train", "findings": text}
        for i, text in enumerate(["A.", "B.", "B.", "C.", "B."])
    ]
    test = [{"study_id": f"t{i}", "split": "test", "findings": "B."} for i in range(20)]
    images = [
        {"image_id": f"{s['study_id']}-a", "study_id": s["study_id"], "split": "test", "view": "PA"} for s in test
    ]
    images_path, studies_path = write_data(tmp_path, train + test, images)
    first = generation.generate_baselines(
        images_path, studies_path, "findings", 7, str(tmp_path / "b1.parquet"), str(tmp_path / "r.parquet")
    )
    again = generation.generate_baselines(
        images_path, studies_path, "findings", 7, str(tmp_path / "b2.parquet"), str(tmp_path / "r.parquet")
    )
    assert first.equals(again)
    frequent = first.filter(pl.col("method") == "most_frequent")
    assert set(frequent["generated"]) == {"B."} and set(frequent["source_study_id"]) == {"r1"}
    assert set(first.filter(pl.col("method") == "random")["generated"]) == {"A.", "B.", "C."}
    assert read_table(tmp_path / "b1.parquet", "generated").height == 40


def test_consensus_takes_the_candidate_the_others_agree_with():
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    rows = np.array([[0, 1, 2], [3, 1, 0]])
    # Query 1: candidates 0, 1, 2 -> vector 2 is nearest both others. Query 2: 3, 1, 0 -> vector 1.
    assert generation.consensus_choice(rows, vectors).tolist() == [2, 1]
    assert generation.consensus_choice(rows[:, :1], vectors).tolist() == [0, 0]


def test_oracle_takes_the_candidate_closest_to_the_reference():
    texts = ["Heart size is normal.", "Small left pleural effusion.", "No pleural effusion."]
    picked = generation.oracle_choice(
        np.array([[0, 2, 1], [1, 0, 2]]), texts, ["There is a small left pleural effusion.", "Heart size is normal."]
    )
    assert picked.tolist() == [2, 1]


def test_top_candidates_are_exact_and_sorted():
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(50, 8)).astype(np.float32)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    scores, rows = generation.top_candidates(queries, corpus, 3)
    expected = np.argsort(-(queries @ corpus.T), axis=1)[:, :3]
    assert rows.tolist() == expected.tolist() and (np.diff(scores, axis=1) <= 0).all()
    assert generation.top_candidates(queries, corpus[:2], 5)[1].shape == (5, 2)


def test_no_usable_train_report_is_a_clear_error(tmp_path: Path):
    _, studies_path = write_data(
        tmp_path, [{"study_id": "r0", "split": "train", "findings": None, "impression": "Normal."}], []
    )
    with pytest.raises(InputError, match="no train study has a usable findings text") as refused:
        generation.train_corpus(studies_path, "findings")
    assert "set generation.reference: impression or both" in str(refused.value)


def test_a_collection_without_sections_takes_the_whole_report_as_the_reference(tmp_path: Path, caplog):
    """A manifest with only a `report` column: every findings and impression is empty."""
    reports = {"r0": "Small left pleural effusion.", "r1": "Lungs are clear.", "t0": "Moderate cardiomegaly."}
    rows = [
        {"study_id": study, "patient_id": f"p-{study}", "split": "train" if study[0] == "r" else "test"}
        | {"findings": None, "impression": None, "report": text, "dataset": "manifest"}
        for study, text in reports.items()
    ] + [{"study_id": "t1", "patient_id": "p-t1", "split": "test", "findings": None, "impression": None}]
    rows[-1] |= {"report": "   ", "dataset": "manifest"}
    write_table(pl.DataFrame(rows), "studies", tmp_path / "studies.parquet")
    images = [
        {"image_id": f"{s}-a", "study_id": s, "patient_id": f"p-{s}", "split": "test", "view": "PA"}
        for s in ("t0", "t1")
    ]
    images = [row | {"path": "x.png", "width": 8, "height": 8} for row in images]
    write_table(pl.DataFrame(images), "images", tmp_path / "images.parquet")
    studies = read_table(tmp_path / "studies.parquet", "studies")
    assert generation.reference_section(studies, "findings") == "report"
    assert (
        generation.check_generation_inputs(studies, read_table(tmp_path / "images.parquet", "images"), "findings", "x")
        == "report"
    )
    with caplog.at_level("WARNING", logger="mtcxr.generation.generate"):
        table = generation.generate_baselines(
            str(tmp_path / "images.parquet"),
            str(tmp_path / "studies.parquet"),
            "findings",
            0,
            str(tmp_path / "baselines.parquet"),
            str(tmp_path / "rejects.parquet"),
        )
    assert "no findings or impression sections" in caplog.text and "generation.reference: findings" in caplog.text
    assert set(table["reference"]) == {"Moderate cardiomegaly."} and set(table["study_id"]) == {"t0"}
    assert set(table["generated"]) <= {"Small left pleural effusion.", "Lungs are clear."}
    rejects = read_table(tmp_path / "rejects.parquet", "rejects")
    assert rejects.select("item", "reason").rows() == [("t1", "no report text")]
    # A collection with sections keeps generation.reference.
    with_sections = studies.with_columns(findings=pl.col("report"))
    assert generation.reference_section(with_sections, "impression") == "impression"


def test_no_usable_test_reference_is_refused_with_the_section_to_set(tmp_path: Path):
    studies = [
        {"study_id": "r0", "split": "train", "findings": "No effusion.", "impression": "Normal."},
        {"study_id": "t0", "split": "test", "findings": None, "impression": "Cardiomegaly."},
        {"study_id": "t1", "split": "test", "findings": "___.", "impression": "No acute process."},
    ]
    images = [{"image_id": f"{s}-a", "study_id": s, "split": "test", "view": "PA"} for s in ("t0", "t1")]
    images_path, studies_path = write_data(tmp_path, studies, images)
    table = read_table(studies_path, "studies")
    with pytest.raises(InputError) as refused:
        generation.check_generation_inputs(table, read_table(images_path, "images"), "findings", "the manifest m.csv")
    assert str(refused.value) == (
        "report generation cannot run on the manifest m.csv: none of the 2 test studies has a usable findings text "
        "(usable impression: 2, both: 2), so nothing to score; set generation.reference: impression or both, "
        "or set `generation: {enabled: false}` to skip report generation."
    )
    assert generation.check_generation_inputs(table, None, "impression", "x") == "impression"
    # Where the dataset is not read before the run (MIMIC-CXR), the first generation job stops the same way.
    with pytest.raises(InputError, match=r"no test study of .* can be a report-generation query \(1: no findings"):
        generation.generation_queries(images_path, studies_path, "findings")


def test_test_studies_without_a_frontal_image_are_refused(tmp_path: Path):
    studies = [
        {"study_id": "r0", "split": "train", "findings": "No effusion."},
        {"study_id": "t0", "split": "test", "findings": "Cardiomegaly."},
    ]
    images = [{"image_id": "t0-a", "study_id": "t0", "split": "test", "view": "LATERAL"}]
    images_path, studies_path = write_data(tmp_path, studies, images)
    with pytest.raises(InputError, match=r"none of the 1 test studies with a usable findings text has a frontal"):
        generation.check_generation_inputs(
            read_table(studies_path, "studies"), read_table(images_path, "images"), "findings", "x"
        )


def generated_table(
    studies: list[str],
    references: list[str],
    generated: list[str],
    method: str,
    backbone: str | None = None,
    variant: str | None = None,
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "study_id": studies,
            "image_id": [f"{s}-a" for s in studies],
            "method": method,
            "backbone": backbone,
            "variant": variant,
            "rank": None,
            "source_study_id": [f"src-{i}" for i in range(len(studies))],
            "generated": generated,
            "reference": references,
        }
    )


def score(tmp_path: Path, tables: list[pl.DataFrame], n_boot: int = 200) -> tuple[pl.DataFrame, pl.DataFrame]:
    paths = []
    for i, table in enumerate(tables):
        paths.append(str(tmp_path / f"g{i}.parquet"))
        write_table(table, "generated", paths[-1])
    metrics = score_generation(
        paths,
        str(tmp_path / "per_study.parquet"),
        str(tmp_path / "m.parquet"),
        str(tmp_path / "m.csv"),
        "auto",
        "positive",
        n_boot,
        0,
    )
    return metrics, read_table(tmp_path / "per_study.parquet", "generation_scores")


REFERENCES = [
    "Small left pleural effusion. The heart is normal in size.",
    "No acute cardiopulmonary process.",
    "Moderate cardiomegaly with mild pulmonary edema.",
    "Right lower lobe consolidation, concerning for pneumonia.",
    "No pneumothorax. Left basilar atelectasis.",
    # Non-ASCII, and very long: 300 words, more than nearly every real findings section. (METEOR's alignment
    # time grows steeply with a repeated sentence: 1,500 words took a minute in this one test.)
    "Café-au-lait shaped opacity — ¿lung lesion? " + "The lungs are otherwise clear. " * 60,
]


def test_identical_reports_score_one_and_opposite_findings_zero(tmp_path: Path):
    java_or_skip()
    studies = [f"s{i}" for i in range(len(REFERENCES))]
    opposite = [text.replace("Small left pleural effusion.", "No pleural effusion.") for text in REFERENCES]
    shuffled = REFERENCES[1:] + REFERENCES[:1]
    metrics, per_study = score(
        tmp_path,
        [
            generated_table(studies, REFERENCES, shuffled, "random"),
            generated_table(studies, REFERENCES, REFERENCES, "retrieval", "demo", "copy"),
            generated_table(studies, REFERENCES, opposite, "retrieval", "demo", "opposite"),
        ],
    )

    def value(variant: str | None, metric: str, observation: str | None = None) -> float:
        rows = metrics.filter(
            (pl.col("variant").is_null() if variant is None else pl.col("variant") == variant)
            & (pl.col("metric") == metric)
            & (pl.col("observation").is_null() if observation is None else pl.col("observation") == observation)
        )
        assert rows.height == 1, (variant, metric, observation)
        return rows["value"][0]

    assert value("copy", "bleu4") == pytest.approx(1.0, abs=1e-6)
    assert value("copy", "rouge_l") == pytest.approx(1.0)
    assert value("copy", "meteor") == pytest.approx(1.0, abs=1e-6)
    assert value("copy", "ce_f1_micro") == pytest.approx(1.0) and value("copy", "ce_f1_micro5") == pytest.approx(1.0)
    assert value("opposite", "ce_f1", "pleural_effusion") == 0.0
    assert value("opposite", "ce_f1", "cardiomegaly") == pytest.approx(1.0)
    assert value(None, "bleu4") < 0.5
    copy = metrics.filter((pl.col("variant") == "copy") & (pl.col("metric") == "bleu4")).row(0, named=True)
    assert copy["difference"] > 0 and copy["difference_low"] <= copy["difference"] <= copy["difference_high"]
    assert copy["p_value"] >= 1 / (200 + 1) and copy["n_boot"] == 200
    assert metrics.filter(pl.col("method") == "random")["difference"].is_null().all()
    # Means of per-study scores lie inside their percentile interval (corpus BLEU of 6 studies need not).
    rows = metrics.filter(pl.col("metric").is_in(["rouge_l", "cider"]))
    assert ((rows["ci_low"] <= rows["value"] + 1e-12) & (rows["value"] <= rows["ci_high"] + 1e-12)).all()
    assert per_study.height == 3 * len(studies)
    copied = per_study.filter(pl.col("variant") == "copy")
    assert copied["bleu4"].min() == pytest.approx(1.0, abs=1e-6) and copied["ce_f1"].min() == pytest.approx(1.0)
    assert len(copied["meteor_stats"][0]) == nlg.METEOR_STATS
    effusion = per_study.filter((pl.col("variant") == "opposite") & (pl.col("study_id") == "s0")).row(0, named=True)
    assert "pleural_effusion" in effusion["reference_positive"]
    assert "pleural_effusion" not in effusion["generated_positive"]
    assert pl.read_csv(tmp_path / "m.csv").height == metrics.height


def test_studies_missing_from_a_method_are_scored_for_none(tmp_path: Path, caplog):
    java_or_skip()
    studies = ["a", "b", "c"]
    refs = REFERENCES[:3]
    metrics, per_study = score(
        tmp_path,
        [
            generated_table(studies, refs, refs[::-1], "random"),
            generated_table(studies[:2], refs[:2], refs[:2], "retrieval", "demo", "v"),
        ],
        n_boot=20,
    )
    assert set(per_study["study_id"]) == {"a", "b"} and set(metrics["n_studies"]) == {2}
    assert "lack a report from some method" in caplog.text


def test_resample_weights_are_seeded_counts():
    weights = resample_weights(7, 5, seed=3)
    assert weights.shape == (5, 7) and (weights.sum(axis=1) == 7).all()
    assert np.array_equal(weights, resample_weights(7, 5, seed=3))
    assert not np.array_equal(weights, resample_weights(7, 5, seed=4))
