"""The `label_supcon` loss (X-TRA's multi-label supervised contrastive term) inside head training."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from mtcxr.data.embedded_split import SplitEmbeddings
from mtcxr.models import train
from mtcxr.models.heads import ProjectionHeads, project
from mtcxr.models.losses import label_supcon_loss

# Label sets of the hidden clusters (indices into CHEXPERT_LABELS): No Finding; Cardiomegaly + Edema;
# Edema + Pleural Effusion; Lung Opacity + Atelectasis. Clusters 1 and 2 overlap (Jaccard 1/3).
CLUSTER_LABELS = [(0,), (2, 5), (5, 10), (3, 8)]


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one CPU thread: these models are tiny, and extra threads only contend with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def unit(vectors: np.ndarray) -> np.ndarray:
    """Return the rows of `vectors`, L2-normalised, as float32."""
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def clustered_split(
    rng: np.random.Generator, centres: np.ndarray, n_studies: int, nuisance: float = 1.2
) -> SplitEmbeddings:
    """Return a split whose studies' label sets are a function of a hidden cluster, two images per study.

    The first half of each vector carries the cluster's centre; the second half a per-study nuisance
    (think patient or scanner) shared by the study's images and its report and larger than the signal:
    untrained, neighbours follow the nuisance, and CLIP alone is happy to keep it (it tells pairs apart).
    Images are listed in shuffled study order, so `image_study` must be honoured to get their labels.
    """
    half = centres.shape[1]
    cluster = rng.integers(0, len(CLUSTER_LABELS), n_studies)
    labels = np.zeros((n_studies, 14), dtype=bool)
    for study, c in enumerate(cluster):
        labels[study, list(CLUSTER_LABELS[c])] = True
    study_part = np.concatenate([centres[cluster], nuisance * rng.normal(size=(n_studies, half))], axis=1)
    image_study = rng.permutation(np.repeat(np.arange(n_studies), 2))
    jitter = lambda n: 0.1 * rng.normal(size=(n, 2 * half))  # noqa: E731
    return SplitEmbeddings(
        image_ids=np.array([f"i{i}" for i in range(len(image_study))], dtype=object),
        image_vectors=unit(study_part[image_study] + jitter(len(image_study))),
        image_study=image_study.astype(np.int64),
        study_ids=np.array([f"s{i}" for i in range(n_studies)], dtype=object),
        reports=["report"] * n_studies,
        text_vectors=unit(study_part + jitter(n_studies)),
        abnormal=~labels[:, 0],
        positive_labels=labels,
        metadata={"logit_scale": 100.0, "backbone": "demo", "spec": "demo"},
    )


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the row-wise Jaccard index of two boolean matrices (0 where both rows are empty)."""
    union = (a | b).sum(axis=1)
    return np.where(union > 0, (a & b).sum(axis=1) / np.maximum(union, 1), 0.0)


def nearest_train_jaccard(train_split: SplitEmbeddings, query: SplitEmbeddings, heads: ProjectionHeads | None) -> float:
    """Return the mean Jaccard between each query image's label set and that of its nearest train image."""
    keys, queries = train_split.image_vectors, query.image_vectors
    if heads is not None:
        keys, queries = project(heads.image, keys), project(heads.image, queries)
    nearest = (queries @ keys.T).argmax(axis=1)
    query_labels = query.positive_labels[query.image_study]
    return float(jaccard(query_labels, train_split.positive_labels[train_split.image_study][nearest]).mean())


def splits(seed: int = 0, n_train: int = 96, n_validate: int = 32, n_test: int = 64) -> tuple[SplitEmbeddings, ...]:
    """Return train, validate and test splits drawn around the same cluster centres."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(len(CLUSTER_LABELS), 8)))
    return tuple(clustered_split(rng, centres, n) for n in (n_train, n_validate, n_test))


def test_label_supcon_is_a_known_loss():
    assert "label_supcon" in train.LOSS_NAMES
    train_split, validate, _ = splits(n_train=8, n_validate=4, n_test=2)
    with pytest.raises(ValueError, match="label_supcn"):
        train.fit_heads(
            train_split, validate, {"label_supcn": 1.0}, train.TrainSettings(epochs=1, hidden_dim=8, device="cpu")
        )


def test_composite_loss_adds_label_supcon_over_both_views():
    train_split, _, _ = splits(n_train=6, n_validate=2, n_test=2)
    heads = ProjectionHeads(16, 8, 20.0, seed=0)
    torch.nn.init.normal_(heads.image.down.weight, std=0.3)  # not the identity, so the two views differ
    image = torch.from_numpy(train_split.image_vectors)
    text = torch.from_numpy(train_split.text_vectors[train_split.image_study])
    abnormal = torch.from_numpy(train_split.image_abnormal)
    labels = torch.from_numpy(train_split.positive_labels[train_split.image_study])
    weights = {"clip": 1.0, "label_supcon": 0.5}
    terms = train.composite_loss(heads, image, text, abnormal, weights, 0.2, 1.0, labels)
    features = torch.cat([heads.image(image), heads.text(text)])
    expected = label_supcon_loss(features, torch.cat([labels, labels]), 0.2)
    assert set(terms) == {"clip", "label_supcon", "total"}
    assert terms["label_supcon"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert terms["total"].item() == pytest.approx(terms["clip"].item() + 0.5 * expected.item(), abs=1e-5)
    with pytest.raises(ValueError, match="label sets"):
        train.composite_loss(heads, image, text, abnormal, weights, 0.2, 1.0)


def test_history_reports_label_supcon_and_validation_includes_it():
    train_split, validate, _ = splits(n_train=24, n_validate=10, n_test=2)
    weights = {"clip": 1.0, "label_supcon": 0.5}
    settings = train.TrainSettings(epochs=3, batch_size=16, hidden_dim=16, supcon_temperature=0.2, device="cpu")
    heads, history = train.fit_heads(train_split, validate, weights, settings)
    assert {"train_label_supcon", "validate_label_supcon"} <= set(history.columns)
    last = history.row(-1, named=True)
    assert last["validate_total"] == pytest.approx(
        last["validate_clip"] + 0.5 * last["validate_label_supcon"], rel=1e-5
    )
    # The validation term is the loss of the returned heads on the whole validate split, labels by study.
    with torch.no_grad():
        image = heads.image(torch.from_numpy(validate.image_vectors))
        text = heads.text(torch.from_numpy(validate.text_vectors[validate.image_study]))
        labels = torch.from_numpy(validate.positive_labels[validate.image_study])
        expected = label_supcon_loss(torch.cat([image, text]), torch.cat([labels, labels]), 0.2)
    assert last["validate_label_supcon"] == pytest.approx(expected.item(), rel=1e-5)


def test_variants_without_label_supcon_ignore_the_label_sets():
    train_split, validate, _ = splits(n_train=16, n_validate=6, n_test=2)
    relabelled = SplitEmbeddings(**{**vars(train_split), "positive_labels": ~train_split.positive_labels})
    runs = [
        train.fit_heads(
            split,
            validate,
            {"clip": 1.0, "supcon": 1.0},
            train.TrainSettings(epochs=2, batch_size=8, hidden_dim=16, device="cpu"),
        )
        for split in (train_split, relabelled)
    ]
    (first, first_history), (second, second_history) = runs
    assert all(torch.equal(value, second.state_dict()[name]) for name, value in first.state_dict().items())
    assert first_history.equals(second_history)


def test_label_supcon_training_improves_nearest_neighbour_label_agreement():
    train_split, validate, test = splits(seed=0)
    settings = train.TrainSettings(epochs=15, batch_size=64, hidden_dim=32, learning_rate=1e-2, device="cpu")
    fit = lambda weights: train.fit_heads(train_split, validate, weights, settings)[0]  # noqa: E731
    untrained = nearest_train_jaccard(train_split, test, None)
    clip_only = nearest_train_jaccard(train_split, test, fit({"clip": 1.0}))
    xtra = nearest_train_jaccard(train_split, test, fit({"clip": 1.0, "label_supcon": 1.0}))
    # Held-out images: their nearest train image's label set agrees far better once the labels shape
    # the space; CLIP alone keeps the study nuisance that misleads the untrained neighbours.
    assert untrained < 0.7
    assert xtra > untrained + 0.2
    assert xtra > clip_only + 0.2


def test_train_head_writes_label_supcon_history(tmp_path: Path, monkeypatch):
    train_split, validate, _ = splits(n_train=12, n_validate=6, n_test=2)
    monkeypatch.setattr(train, "load_split", lambda *args: {"train": train_split, "validate": validate}[args[5]])
    train.train_head(
        train.HeadInputs(["images.parquet"], "texts.parquet", "images", "studies", "labels"),
        train.HeadOutputs(
            str(tmp_path / "heads.safetensors"), str(tmp_path / "heads.json"), str(tmp_path / "history.parquet")
        ),
        "xtra",
        {"losses": {"clip": 1.0, "label_supcon": 1.0}},
        train.TrainSettings.from_config({"hidden_dim": 16, "epochs": 2, "batch_size": 8}),
    )
    history = pl.read_parquet(tmp_path / "history.parquet")
    assert history.height == 2
    assert {"train_label_supcon", "validate_label_supcon"} <= set(history.columns)
    assert history["validate_label_supcon"].is_finite().all() and (history["validate_label_supcon"] > 0).all()
    assert json.loads((tmp_path / "heads.json").read_text())["losses"] == {"clip": 1.0, "label_supcon": 1.0}
