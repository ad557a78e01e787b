"""Report generation by retrieval (mtcxr.generation) and its scoring stage (mtcxr.generation_scores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mtcxr import generation, nlg
from mtcxr.errors import InputError
from mtcxr.generation_scores import resample_weights, score_generation
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
    with pytest.raises(InputError, match="no train study has a usable findings text"):
        generation.train_corpus(studies_path, "findings")


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
    "Café-au-lait shaped opacity — ¿lung lesion? " + "The lungs are otherwise clear. " * 300,  # non-ASCII, very long
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
