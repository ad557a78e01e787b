"""Epoch selection and early stopping (mtcxr.models.selection) on crafted validation histories."""

import math

import pytest

from mtcxr.models.selection import EpochSelector


def run(selector: EpochSelector, values: list[float | None]) -> int:
    """Feed `values` epoch by epoch until the selector stops; return the number of epochs run."""
    for epoch, value in enumerate(values):
        selector.update(epoch, value)
        if selector.should_stop:
            return epoch + 1
    return len(values)


def test_best_loss_is_kept_and_patience_stops_training():
    losses = [3.0, 2.0, 1.5, 1.6, 1.4, 1.45, 1.5, 1.7, 1.2]
    selector = EpochSelector("best", "validate_loss", patience=3)
    assert run(selector, losses) == 8  # epochs 5, 6, 7 fail to beat 1.4: stop before epoch 8's 1.2
    assert selector.best_epoch == 4 and selector.best_value == 1.4
    unlimited = EpochSelector("best", "validate_loss", patience=0)
    assert run(unlimited, losses) == len(losses) and unlimited.best_epoch == 8


def test_recall_is_maximised_and_ties_keep_the_earlier_epoch():
    selector = EpochSelector("best", "validate_recall")
    run(selector, [0.1, 0.4, 0.4, 0.3])
    assert selector.best_epoch == 1


def test_last_and_no_validation_keep_the_final_epoch():
    last = EpochSelector("last", "validate_loss", patience=1)
    assert run(last, [1.0, 2.0, 3.0]) == 3 and last.best_epoch == 2
    blind = EpochSelector("best", "validate_loss", patience=1)
    assert run(blind, [None, math.nan, None]) == 3 and blind.best_epoch == 2


def test_unknown_settings_name_the_key():
    with pytest.raises(ValueError, match="train.select"):
        EpochSelector("first")
    with pytest.raises(ValueError, match="train.criterion"):
        EpochSelector("best", "validate_auc")


def test_fit_heads_keeps_the_epoch_it_marks_and_stops_early():
    """Over-fitting a tiny train split: validation loss turns up, and the kept heads are the marked epoch's."""
    import numpy as np
    import polars as pl
    import torch

    from mtcxr.data.embedded_split import SplitEmbeddings
    from mtcxr.models import train

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)

    def split(n: int, prefix: str) -> SplitEmbeddings:
        vectors = rng.normal(size=(n, 16)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = vectors + 0.8 * rng.normal(size=vectors.shape).astype(np.float32)
        texts /= np.linalg.norm(texts, axis=1, keepdims=True)
        labels = np.zeros((n, 14), dtype=bool)
        labels[:, 0] = rng.random(n) < 0.5
        return SplitEmbeddings(
            np.array([f"{prefix}{i}" for i in range(n)], dtype=object),
            vectors,
            np.arange(n, dtype=np.int64),
            np.array([f"{prefix}s{i}" for i in range(n)], dtype=object),
            ["r"] * n,
            texts,
            ~labels[:, 0],
            labels,
            {},
        )

    train_split, validate_split = split(24, "t"), split(40, "v")
    heads, history = train.fit_heads(
        train_split,
        validate_split,
        {"clip": 1.0},
        train.TrainSettings(epochs=60, batch_size=24, learning_rate=0.02, hidden_dim=64, select="best", patience=5),
        seed=0,
    )
    chosen = history.filter(pl.col("chosen"))
    assert chosen.height == 1
    best = history["validate_total"].arg_min()
    assert chosen["epoch"][0] == history["epoch"][best]
    assert history.height < 60 and history.height == chosen["epoch"][0] + 1 + 5  # stopped 5 epochs after the best
    assert "validate_recall" in history.columns and history["validate_recall"].is_between(0, 1).all()
    # The returned heads are the chosen epoch's: their validation loss is the chosen row's.
    tensors = [torch.from_numpy(a) for a in (validate_split.image_vectors, validate_split.text_vectors)]
    with torch.no_grad():
        terms = train.composite_loss(
            heads, *tensors, torch.from_numpy(validate_split.abnormal), {"clip": 1.0}, 0.1, 1.0
        )
    assert float(terms["total"]) == pytest.approx(chosen["validate_total"][0], rel=1e-5)
    _, last = train.fit_heads(
        train_split,
        validate_split,
        {"clip": 1.0},
        train.TrainSettings(epochs=8, batch_size=24, hidden_dim=64, select="last"),
        seed=0,
    )
    assert last.height == 8 and last["chosen"].to_list() == [False] * 7 + [True]
