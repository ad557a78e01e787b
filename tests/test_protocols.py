"""The published protocols (mtcxr.retrieval.protocols): CXR-CLIP's image->text retrieval and label-based 5x200."""

from __future__ import annotations

import numpy as np
import pytest

from mtcxr.retrieval import protocols

# Three studies: A and B share their report exactly; C's differs from it only in case and a full stop,
# so normalised-text dedup (mtcxr's own protocol) would merge all three and exact-text dedup does not.
REPORTS = ["no effusion", "no effusion", "No effusion."]
STUDY_VECTORS = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
# Images, deliberately not in image_id order: a3 (AP) comes before a2 (PA) in the arrays.
IMAGE_IDS = np.array(["a3", "a1", "a2", "b1", "c1"], dtype=object)
IMAGE_STUDY = np.array([0, 0, 0, 1, 2])
IMAGE_VIEWS = np.array(["AP", "LATERAL", "PA", "PA", "AP"], dtype=object)
IMAGE_VECTORS = np.array([[0.0, 1.0], [0.0, 1.0], [0.9, 0.1], [0.6, 0.8], [0.1, 0.9]], dtype=np.float32)
IMAGE_VECTORS /= np.linalg.norm(IMAGE_VECTORS, axis=1, keepdims=True)


def test_first_frontal_image_is_the_lowest_frontal_image_id():
    assert protocols.first_frontal_images(IMAGE_IDS, IMAGE_STUDY, IMAGE_VIEWS).tolist() == [2, 3, 4]  # a2, b1, c1
    assert protocols.every_frontal_image(IMAGE_VIEWS).tolist() == [0, 2, 3, 4]


def test_cxr_clip_ranks_match_a_hand_computation():
    # Queries a2, b1, c1; gallery: "no effusion" (A's vector) and "No effusion." (C's).
    # a2 (0.9, 0.1): A 0.99 > C 0.11 -> rank 1. b1 (0.6, 0.8): its text "no effusion" 0.6 < C 0.8 -> rank 2.
    # c1 (0.1, 0.9): C -> rank 1.
    queries = protocols.first_frontal_images(IMAGE_IDS, IMAGE_STUDY, IMAGE_VIEWS)
    ranks, gallery = protocols.cxr_clip_ranks(queries, IMAGE_VECTORS, IMAGE_STUDY, REPORTS, STUDY_VECTORS)
    assert gallery == 2 and ranks.tolist() == [1, 2, 1]
    assert (ranks <= 1).mean() == pytest.approx(2 / 3) and ranks.mean() == pytest.approx(4 / 3)
    # Taking every frontal image adds a3 (0, 1), whose own report ranks 2 behind C's.
    every = protocols.every_frontal_image(IMAGE_VIEWS)
    ranks, gallery = protocols.cxr_clip_ranks(every, IMAGE_VECTORS, IMAGE_STUDY, REPORTS, STUDY_VECTORS)
    assert gallery == 2 and ranks.tolist() == [2, 1, 2, 1]


def test_exact_text_gallery_keeps_case_and_punctuation_apart():
    first, of_item = protocols.exact_text_gallery(REPORTS + ["no effusion"])
    assert first.tolist() == [0, 2] and of_item.tolist() == [0, 0, 1, 0]


def test_single_finding_class_needs_one_certain_positive_and_no_uncertain():
    nan = np.nan
    five = np.array(
        [
            [1, 0, 0, 0, 0],  # atelectasis alone -> 0
            [nan, 1, nan, 0, nan],  # cardiomegaly, the rest negative or not mentioned -> 1
            [1, 1, 0, 0, 0],  # two positives -> -1
            [0, 0, 1, -1, 0],  # consolidation with edema uncertain -> -1
            [-1, 0, 0, 0, 0],  # only uncertain -> -1
            [0, 0, 0, 0, 1],  # pleural effusion -> 4
            [0, 0, 0, 0, 0],  # none -> -1
        ]
    )
    assert protocols.single_finding_class(five).tolist() == [0, 1, -1, -1, -1, 4, -1]


def test_5x200_sampling_is_deterministic_by_seed_and_caps_at_what_exists():
    rng = np.random.default_rng(1)
    classes = rng.integers(-1, 5, size=2000)
    classes[classes == 3] = -1  # no edema study at all
    classes[np.flatnonzero(classes == -1)[:5]] = 3  # ... but five
    chosen, counts = protocols.sample_5x200(classes, per_class=200, seed=7)
    again, _ = protocols.sample_5x200(classes, per_class=200, seed=7)
    other, _ = protocols.sample_5x200(classes, per_class=200, seed=8)
    assert np.array_equal(chosen, again) and not np.array_equal(chosen, other)
    assert counts == {
        "atelectasis": 200,
        "cardiomegaly": 200,
        "consolidation": 200,
        "edema": 5,
        "pleural_effusion": 200,
    }
    assert len(chosen) == 805 and len(np.unique(chosen)) == 805
    assert (classes[chosen] >= 0).all()  # only single-finding studies
    assert np.bincount(classes[chosen], minlength=5).tolist() == [200, 200, 200, 5, 200]


def test_class_hit_precision():
    queries = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    keys = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    key_class = np.array([0, 1, 1, 0])
    # Query 0 (class 0) ranks keys 0, 1, 3, 2; query 1 (class 1) ranks 2, 3, 1, 0.
    precision = protocols.class_hit_precision(queries, keys, np.array([0, 1]), key_class, ks=(1, 2, 3))
    assert precision[1].tolist() == [1.0, 1.0]
    assert precision[2].tolist() == [0.5, 0.5]
    assert precision[3].tolist() == pytest.approx([2 / 3, 2 / 3])


# --- the registry: what `evaluate` runs for each name of `evaluate.protocols` ---------------------------


def tiny_gallery(read_studies=None) -> protocols.Gallery:
    """The three studies above as an index's gallery: A cardiomegaly alone, B edema alone, C no finding."""
    import polars as pl

    from mtcxr.tables import CHEXPERT_LABELS

    positive = {"cardiomegaly": [1, None, None], "edema": [None, 1, None], "no_finding": [None, None, 1]}
    labels = pl.DataFrame(
        {"study_id": ["A", "B", "C"], **{name: positive.get(name, [None] * 3) for name in CHEXPERT_LABELS}},
        schema_overrides={name: pl.Int8 for name in CHEXPERT_LABELS},
    )
    return protocols.Gallery(
        image_ids=IMAGE_IDS,
        images=IMAGE_VECTORS,
        image_study=IMAGE_STUDY,
        image_views=IMAGE_VIEWS,
        texts=STUDY_VECTORS[[0, 2]],
        text_of_study=np.array([0, 0, 1]),
        first_study=np.array([0, 2]),
        labels=labels,
        study_abnormal=np.array([True, True, False]),
        study_positive=np.stack([(labels[name].fill_null(0) == 1).to_numpy() for name in CHEXPERT_LABELS], axis=1),
        read_studies=read_studies or (lambda: (STUDY_VECTORS, REPORTS)),
    )


def test_each_registered_protocol_writes_the_tasks_the_registry_names():
    settings = protocols.EvaluateSettings(ks=(1, 2), precision_k=2, n_boot=10, per_class=5)
    assert list(protocols.PROTOCOL_TASKS) == list(protocols.PROTOCOLS)
    for name, protocol in protocols.PROTOCOLS.items():
        rows = protocols.MetricRows(settings.n_boot, settings.seed)
        protocol(tiny_gallery(), rows, settings)
        assert {row["task"] for row in rows.summary} == set(protocols.PROTOCOL_TASKS[name]), name
    # cxr_clip on the hand-computed ranks above: a2 and c1 first, b1 second
    rows = protocols.MetricRows(10, 0)
    protocols.PROTOCOLS["cxr_clip"](tiny_gallery(), rows, settings)
    recall = {row["k"]: row["value"] for row in rows.summary if row["metric"] == "recall"}
    assert recall == {1: pytest.approx(2 / 3), 5: 1.0, 10: 1.0}


def test_studies_are_read_only_for_the_protocols_that_need_them():
    """An index built before the published protocols has no studies.parquet: mtcxr's own protocol runs on it."""

    def missing():
        raise FileNotFoundError("studies.parquet")

    rows = protocols.MetricRows(10, 0)
    protocols.PROTOCOLS["mtcxr"](tiny_gallery(missing), rows, protocols.EvaluateSettings(ks=(1,), precision_k=1))
    assert {row["task"] for row in rows.summary} == {"i2t", "t2i"}
    with pytest.raises(FileNotFoundError):
        protocols.PROTOCOLS["label_5x200"](tiny_gallery(missing), rows, protocols.EvaluateSettings())


def test_the_schema_lists_exactly_the_registered_protocols():
    from pathlib import Path

    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["evaluate"]["properties"]["protocols"]["items"]["enum"] == list(protocols.PROTOCOLS)


def test_settings_from_the_config_section():
    section = {
        "ks": [1, 5],
        "precision_k": 5,
        "bootstrap": 50,
        "seed": 1,
        "protocols": ["cxr_clip"],
        "cxr_clip_images": "every_frontal",
        "label_5x200": {"per_class": 20, "seed": 3},
    }
    assert protocols.EvaluateSettings.from_config(section) == protocols.EvaluateSettings(
        ks=(1, 5),
        precision_k=5,
        n_boot=50,
        seed=1,
        protocols=("cxr_clip",),
        cxr_clip_images="every_frontal",
        per_class=20,
        sample_seed=3,
    )
    assert protocols.EvaluateSettings.from_config({"label_5x200": {}}) == protocols.EvaluateSettings()
    with pytest.raises(ValueError, match=r"evaluate.protocols: unknown \['clip_benchmark'\]; choose from"):
        protocols.EvaluateSettings(protocols=("mtcxr", "clip_benchmark"))
    with pytest.raises(ValueError, match=r"evaluate.cxr_clip_images is 'auto' here"):
        protocols.EvaluateSettings.from_config({"cxr_clip_images": "auto"})
