"""Zero-shot classification with text prompts (CheXzero; CXR-CLIP's zero-shot tables) on an index's test split.

The prompts of `evaluate.zeroshot_classification` (CheXzero's pairs by default: "pleural effusion" against
"no pleural effusion"), one pair or more per CheXpert observation but No Finding
(`tables.ZEROSHOT_OBSERVATIONS`), are embedded by `embed_prompts` (a job per backbone, so that a changed
prompt reruns no head) and projected through the variant's text head by `evaluate`
(`models.heads_numpy`); here each side's prompts are averaged and L2-normalised (CLIP's prompt
ensembling). A test image's score for an observation is cos(image, positive) − cos(image, negative):
CheXzero's softmax over the pair, exp(τp) / (exp(τp) + exp(τn)) = sigmoid(τ(p − n)), is monotone in it, so
the ROC-AUC is the same.

- Per-label ROC-AUC over one image per test study (its first frontal image, the query of CXR-CLIP's and the
  5x200 protocols) against the study's label: positive 1, negative and not mentioned 0, uncertain by
  `evaluate.zeroshot_classification.uncertain` (X-TRA's targets and mask); an observation without both
  classes is left out (logged); macro AUC is the mean of the others; 95% bootstrap CIs over the images
  (`metrics.bootstrap_multilabel_auc`, the macro of each resample over the same observations).
- 5x200 accuracy: on the studies the label_5x200 protocol draws (`protocols.five_by_200_studies`), the class
  predicted is the one of the five whose positive prompts are most similar to the image; the share right,
  with a bootstrap CI over the studies.

Pure NumPy on arrays (the `evaluate` stage stays torch-free); `zeroshot_classification` runs both on a
`protocols.Gallery` into its `MetricRows` and returns the per-observation rows.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr import metrics
from mtcxr.embedding_io import read_embeddings
from mtcxr.retrieval.protocols import (
    FIVE_CLASSES,
    EvaluateSettings,
    Gallery,
    MetricRows,
    first_frontal_of_study,
    five_by_200_studies,
)
from mtcxr.tables import CHEXPERT_DISPLAY, ZEROSHOT_OBSERVATIONS

log = logging.getLogger(__name__)

TASK = "zeroshot_classification"
SIDES = ("positive", "negative")


@dataclass(frozen=True)
class Prompts:
    """Embedded prompts (P of them): id (`{observation}/{side}/{i}`), observation, side and vector."""

    ids: np.ndarray  # (P,)
    observations: np.ndarray  # (P,) object
    sides: np.ndarray  # (P,) object: positive | negative
    vectors: np.ndarray  # (P, D)


def read_prompts(path: str | Path) -> Prompts:
    """A prompts table (`embeddings/{backbone}/prompts.parquet`, written by `embed_prompts`)."""
    ids, vectors, _ = read_embeddings(path, "prompt_id")
    table = pl.read_parquet(path, columns=["observation", "side"])
    return Prompts(
        ids=ids,
        observations=table["observation"].to_numpy().astype(object),
        sides=table["side"].to_numpy().astype(object),
        vectors=vectors,
    )


def prompt_means(prompts: Prompts, observations: tuple[str, ...] = ZEROSHOT_OBSERVATIONS) -> tuple[np.ndarray, ...]:
    """((L, D) positive, (L, D) negative): each observation's prompts of a side averaged, then L2-normalised."""
    means = []
    for side in SIDES:
        rows = []
        for name in observations:
            chosen = (prompts.observations == name) & (prompts.sides == side)
            if not chosen.any():
                raise ValueError(
                    f"the prompts table has no {side} prompt of {name}; rerun embed_texts and project_embeddings"
                )
            mean = prompts.vectors[chosen].astype(np.float64).mean(axis=0)
            rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        means.append(np.stack(rows) if rows else np.zeros((0, prompts.vectors.shape[1])))
    return means[0], means[1]


def prompt_scores(images: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """(N, L) cos(image, positive) − cos(image, negative) for unit `images` (N, D) and prompt means (L, D)."""
    images = np.asarray(images, dtype=np.float64)
    return images @ positive.T - images @ negative.T


def label_values(labels: pl.DataFrame, observations: tuple[str, ...] = ZEROSHOT_OBSERVATIONS) -> np.ndarray:
    """(S, L) float: a labels table's 1 / 0 / −1 per observation, NaN where not mentioned."""
    return np.stack(
        [labels[name].cast(pl.Float64).fill_null(np.nan).to_numpy() for name in observations], axis=1
    ).reshape(labels.height, len(observations))


def targets_and_mask(values: np.ndarray, uncertain: str = "ignore") -> tuple[np.ndarray, np.ndarray]:
    """(targets, mask) as X-TRA scores its labels: positive 1, negative and not mentioned 0, uncertain (−1)
    left out (`ignore`, CheXpert's U-Ignore) or counted as 0 (`zeros`) or 1 (`ones`)."""
    values = np.asarray(values, dtype=np.float64)
    targets = (values == 1).astype(np.float64)
    mask = np.ones(values.shape, dtype=np.float64)
    uncertain_labels = values == -1
    if uncertain == "ones":
        targets[uncertain_labels] = 1.0
    elif uncertain == "ignore":
        mask[uncertain_labels] = 0.0
    elif uncertain != "zeros":
        raise ValueError(f"evaluate.zeroshot_classification.uncertain is {uncertain!r}; choose ignore, zeros or ones")
    return targets, mask


def macro_auc(
    observed: np.ndarray, resampled: np.ndarray, kept: np.ndarray
) -> tuple[float, float | None, float | None]:
    """(macro AUC over the `kept` observations, 95% interval): each resample's macro over the same ones."""
    if not kept.any():
        return float("nan"), None, None
    with warnings.catch_warnings():  # a resample where no kept label has both classes is NaN, and skipped
        warnings.simplefilter("ignore", RuntimeWarning)
        distribution = np.nanmean(resampled[:, kept], axis=1)
    low, high = metrics.percentile_interval(distribution)
    return float(np.mean(observed[kept])), low, high


def predict_class(images: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """(N,) index of the class whose positive prompt mean (C, D) is most similar to each image (ties: lower)."""
    return np.argmax(np.asarray(images, dtype=np.float64) @ positive.T, axis=1).astype(np.int64)


def zeroshot_classification(
    gallery: Gallery, prompts: Prompts, rows: MetricRows, settings: EvaluateSettings
) -> list[dict]:
    """Add the zero-shot rows (task `zeroshot_classification`: `macro_auc`, `accuracy_5x200`) of one index to
    `rows`; return the per-observation AUC rows (observation, value, ci_low, ci_high, n_images, n_positive)."""
    g = gallery
    positive, negative = prompt_means(prompts)
    first_image = first_frontal_of_study(g)
    studies = np.flatnonzero(first_image >= 0)
    if not len(studies):
        log.warning("zero-shot classification: no test study with a frontal image; no rows")
        return []
    images = g.images[first_image[studies]]
    targets, mask = targets_and_mask(label_values(g.labels)[studies], settings.zeroshot_uncertain)
    scores = prompt_scores(images, positive, negative)
    kept = metrics.both_classes(targets, mask)
    observed, resampled = metrics.bootstrap_multilabel_auc(
        {TASK: scores}, targets, mask, settings.n_boot, settings.seed
    )[TASK]
    left_out = [CHEXPERT_DISPLAY[name] for name, ok in zip(ZEROSHOT_OBSERVATIONS, kept) if not ok]
    if left_out:
        log.warning(
            "zero-shot classification: left out of the AUCs (not both classes among the %d test images): %s",
            len(studies),
            ", ".join(left_out),
        )
    per_observation = []
    for j, name in enumerate(ZEROSHOT_OBSERVATIONS):
        if not kept[j]:
            continue
        low, high = metrics.percentile_interval(resampled[:, j])
        counted = mask[:, j] > 0
        per_observation.append(
            {
                "observation": name,
                "value": float(observed[j]),
                "ci_low": low,
                "ci_high": high,
                "n_images": int(counted.sum()),
                "n_positive": int((targets[counted, j] > 0.5).sum()),
            }
        )
    value, low, high = macro_auc(observed, resampled, kept)
    if kept.any():
        rows.add(TASK, "macro_auc", None, value, low, high, len(studies))
        log.info(
            "zero-shot classification: macro AUC %.3f [%s, %s] over %d observations, %d test images",
            value,
            f"{low:.3f}" if low is not None else "-",
            f"{high:.3f}" if high is not None else "-",
            int(kept.sum()),
            len(studies),
        )

    sampled, classes, sampled_images = five_by_200_studies(g, settings)
    if len(sampled):
        five = [ZEROSHOT_OBSERVATIONS.index(name) for name in FIVE_CLASSES]
        correct = (predict_class(g.images[sampled_images], positive[five]) == classes).astype(np.float64)
        rows.per_query(TASK, "accuracy_5x200", None, correct, g.study_abnormal[sampled])
        log.info("zero-shot 5x200 accuracy %.3f over %d studies", correct.mean(), len(sampled))
    else:
        log.warning("zero-shot 5x200 accuracy: no single-finding test study with a frontal image; no row")
    return per_observation
