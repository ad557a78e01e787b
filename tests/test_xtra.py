"""X-TRA: the retrieval-augmented classifier learns from its neighbours; kNN voting; multi-label AUC."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from mtcxr import metrics
from mtcxr.xtra.evaluate import knn_scores
from mtcxr.xtra.model import (
    N_LABELS,
    Examples,
    NeighbourTokens,
    RetrievalAugmentedClassifier,
    label_states,
    predict,
    targets_and_mask,
)
from mtcxr.xtra.train import XtraSettings, fit_classifier

DIM, K = 32, 6


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads contend and small models crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shared_memory(n_memory: int, seed: int) -> tuple[np.ndarray, NeighbourTokens]:
    """A memory of noise vectors with random label sets (states), used as both image and report memory."""
    rng = np.random.default_rng(seed)
    states = np.where(rng.random((n_memory, N_LABELS)) < 0.3, 3, 1).astype(np.int64)
    vectors = rng.normal(size=(n_memory, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return states, NeighbourTokens(vectors, vectors, states, states, torch.device("cpu"))


def neighbour_only_queries(states: np.ndarray, n_queries: int, seed: int) -> Examples:
    """Queries whose labels only their neighbours carry: the query vectors are noise, and each query's
    2k neighbours are memory entries with exactly the query's label set."""
    rng = np.random.default_rng(seed)
    query_states = np.empty((n_queries, N_LABELS), dtype=np.int64)
    rows = np.empty((n_queries, K), dtype=np.int64)
    for q in range(n_queries):
        entry = rng.integers(len(states))
        query_states[q] = states[entry]
        same = np.flatnonzero((states == states[entry]).all(axis=1))
        rows[q] = rng.choice(same, K)
    queries = rng.normal(size=(n_queries, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    targets, mask = targets_and_mask(query_states, "ignore")
    return Examples(queries, rows, rows.copy(), targets, mask)


def macro_auc(scores: np.ndarray, data: Examples) -> float:
    return float(np.nanmean(metrics.multilabel_auc(scores, data.targets, data.mask)))


def test_xtra_learns_labels_carried_only_by_neighbours():
    states, tokens = shared_memory(300, seed=0)
    train, validate, test = (neighbour_only_queries(states, n, seed) for n, seed in ((600, 1), (150, 2), (300, 3)))
    settings = XtraSettings(epochs=25, batch_size=64, learning_rate=3e-3, weight_decay=1e-4)
    cpu = torch.device("cpu")
    xtra = RetrievalAugmentedClassifier(DIM, 64, 4, 0.0, label_tokens=True, retrieval=True, seed=0)
    xtra, history, best = fit_classifier(xtra, train, validate, tokens, settings, seed=0, device=cpu)
    alone = RetrievalAugmentedClassifier(DIM, 64, 4, 0.0, label_tokens=True, retrieval=False, seed=0)
    alone, _, _ = fit_classifier(alone, train, validate, tokens, settings, seed=0, device=cpu)
    assert macro_auc(predict(xtra, test, tokens), test) > 0.9
    assert abs(macro_auc(predict(alone, test, tokens), test) - 0.5) < 0.1
    assert history["chosen"].sum() == 1 and history.filter(pl.col("chosen"))["epoch"][0] == best
    assert history.filter(pl.col("chosen"))["validate_loss"][0] == history["validate_loss"].min()


def test_classifier_init_depends_on_the_seed_alone():
    torch.manual_seed(123)
    a = RetrievalAugmentedClassifier(DIM, 16, 2, 0.1, True, True, seed=5).state_dict()
    state = torch.random.get_rng_state()
    b = RetrievalAugmentedClassifier(DIM, 16, 2, 0.1, True, True, seed=5).state_dict()
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_hidden_width_must_divide_into_heads():
    with pytest.raises(ValueError, match=r"xtra.hidden_dim \(30\) must be a multiple of xtra.attention_heads \(4\)"):
        RetrievalAugmentedClassifier(DIM, 30, 4, 0.1, True, True, seed=0)


def test_label_states_and_uncertain_policies():
    labels = (
        pl.DataFrame({"study_id": ["a"], **{name: [None] for name in ("no_finding",)}})
        .with_columns(
            [
                pl.lit(v, dtype=pl.Int8).alias(name)
                for name, v in zip(
                    (
                        "enlarged_cardiomediastinum",
                        "cardiomegaly",
                        "lung_opacity",
                        "lung_lesion",
                        "edema",
                        "consolidation",
                        "pneumonia",
                        "atelectasis",
                        "pneumothorax",
                        "pleural_effusion",
                        "pleural_other",
                        "fracture",
                        "support_devices",
                    ),
                    (1, 0, -1, None, 1, 0, -1, None, 1, 0, -1, None, 1),
                )
            ]
        )
        .with_columns(pl.col("no_finding").cast(pl.Int8))
    )
    states = label_states(labels)
    assert states.tolist() == [[0, 3, 1, 2, 0, 3, 1, 2, 0, 3, 1, 2, 0, 3]]
    targets, mask = targets_and_mask(states, "ignore")
    assert targets[0].tolist() == [0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert mask[0].tolist() == [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    assert targets_and_mask(states, "ones")[0][0, 3] == 1 and targets_and_mask(states, "zeros")[1].min() == 1
    with pytest.raises(ValueError, match="xtra.uncertain"):
        targets_and_mask(states, "maybe")


def test_knn_scores_are_similarity_weighted_label_means():
    scores_i = np.array([[0.9, 0.1]])
    scores_r = np.array([[0.0, -0.5]])
    labels_i = np.array([[[1.0], [0.0]]])
    labels_r = np.array([[[1.0], [1.0]]])
    counted = np.ones((1, 2, 1))
    # weights 0.9, 0.1, 0, 0 (clipped): (0.9 * 1 + 0.1 * 0) / 1.0
    assert knn_scores(scores_i, scores_r, labels_i, labels_r, counted, counted)[0, 0] == pytest.approx(0.9)
    # every weight <= 0: plain mean; a label no neighbour counts for scores 0.5
    flat = knn_scores(-scores_i, scores_r - 1, labels_i, labels_r, counted, counted)
    assert flat[0, 0] == pytest.approx(0.75)
    assert knn_scores(scores_i, scores_r, labels_i, labels_r, 0 * counted, 0 * counted)[0, 0] == 0.5


def test_multilabel_auc_matches_sklearn_and_skips_one_class_labels():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    targets = (rng.random((200, 3)) < 0.3).astype(np.float32)
    targets[:, 2] = 0  # no positive: not evaluable
    scores = targets + rng.normal(scale=0.8, size=targets.shape)
    scores[:10, 0] = scores[10:20, 0]  # ties
    mask = np.ones_like(targets)
    mask[:50, 1] = 0
    auc = metrics.multilabel_auc(scores, targets, mask)
    assert auc[0] == pytest.approx(roc_auc_score(targets[:, 0], scores[:, 0]))
    assert auc[1] == pytest.approx(roc_auc_score(targets[50:, 1], scores[50:, 1]))
    assert np.isnan(auc[2])


def test_paired_auc_bootstrap_shares_resamples():
    rng = np.random.default_rng(1)
    targets = (rng.random((300, 2)) < 0.4).astype(np.float32)
    mask = np.ones_like(targets)
    good = targets + rng.normal(scale=0.5, size=targets.shape)
    boot = metrics.bootstrap_multilabel_auc({"a": good, "b": good.copy()}, targets, mask, n_boot=200, seed=0)
    test = metrics.paired_difference(
        boot["a"][0].mean(), boot["b"][0].mean(), boot["a"][1].mean(axis=1), boot["b"][1].mean(axis=1), 200
    )
    assert test == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}
    noise = rng.normal(size=targets.shape)
    boot = metrics.bootstrap_multilabel_auc({"a": noise, "b": good}, targets, mask, n_boot=200, seed=0)
    test = metrics.paired_difference(
        boot["a"][0].mean(), boot["b"][0].mean(), boot["a"][1].mean(axis=1), boot["b"][1].mean(axis=1), 200
    )
    assert test["difference"] > 0.2 and test["ci_low"] > 0 and test["p_value"] == pytest.approx(1 / 201)


def test_xtra_settings_from_the_config_section():
    """The whole `xtra:` section: the keys of the memory and neighbour stages are not the classifiers'."""
    section = {"variants": ["xtra"], "memory": "train", "k": 16, "hidden_dim": 128, "epochs": 3, "uncertain": "zeros"}
    assert XtraSettings.from_config(section) == XtraSettings(hidden_dim=128, epochs=3, uncertain="zeros")
