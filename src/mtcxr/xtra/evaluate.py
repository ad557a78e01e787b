"""Stage `evaluate_xtra`: multi-label ROC-AUC of X-TRA against its baselines on the test split.

Three methods score every test image on the 14 observations, from the same embeddings and
the same neighbours:

- `xtra`: the retrieval-augmented classifier;
- `query_only`: the same classifier trained without its neighbours;
- `knn`: non-parametric label voting, the similarity-weighted mean of the 2k neighbours'
  labels (image and report neighbours; weights are the cosine scores clipped at 0, equal
  weights where every score is <= 0; an uncertain label counts as the policy says, and under
  `ignore` drops out of that label's vote).

Per-label ROC-AUC over the observations with both classes among the test images (uncertain
labels by `xtra.uncertain`), macro AUC their mean, 95% bootstrap CIs over test images (1,000
seeded resamples shared by the methods) and paired bootstrap differences of `xtra` and `knn`
against `query_only`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mtcxr import metrics
from mtcxr.tables import CHEXPERT_DISPLAY, CHEXPERT_LABELS
from mtcxr.xtra.model import (
    METHODS,
    examples,
    load_classifier,
    load_memory_tokens,
    predict,
    targets_and_mask,
)
from mtcxr.xtra.store import read_memory, read_neighbours

log = logging.getLogger(__name__)

BASELINE = "query_only"
AUC_SCHEMA = {
    "backbone": pl.String,
    "variant": pl.String,
    "method": pl.String,
    "label": pl.String,
    "value": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "n_images": pl.Int64,
    "n_positive": pl.Int64,
}
PAIRED_SCHEMA = {
    "backbone": pl.String,
    "variant": pl.String,
    "method": pl.String,
    "baseline": pl.String,
    "metric": pl.String,
    "difference": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "p_value": pl.Float64,
    "n_boot": pl.Int64,
    "n_images": pl.Int64,
}
MACRO = "macro"


def knn_scores(
    image_scores: np.ndarray,
    report_scores: np.ndarray,
    image_labels: np.ndarray,
    report_labels: np.ndarray,
    image_mask: np.ndarray,
    report_mask: np.ndarray,
) -> np.ndarray:
    """(N, L) similarity-weighted mean of the image and report neighbours' labels.

    `*_scores` (N, k) are the neighbours' cosine scores; `*_labels` / `*_mask` (N, k, L) their
    targets and whether each counts (0/1). Weights are the scores clipped at 0 (equal where all are
    <= 0); a label none of whose neighbours counts scores 0.5.
    """
    scores = np.concatenate([image_scores, report_scores], axis=1).astype(np.float64)
    labels = np.concatenate([image_labels, report_labels], axis=1).astype(np.float64)
    counted = np.concatenate([image_mask, report_mask], axis=1).astype(np.float64)
    weights = np.clip(scores, 0.0, None)
    flat = weights.sum(axis=1) <= 0
    weights[flat] = 1.0
    weights = weights[:, :, None] * counted
    total = weights.sum(axis=1)
    return np.divide((weights * labels).sum(axis=1), total, out=np.full(total.shape, 0.5), where=total > 0)


def evaluate_xtra(
    memory_dir: str,
    test_neighbours: str,
    labels_path: str,
    model_dir: str,
    output_auc: str,
    output_paired: str,
    output_scores: str,
    uncertain: str,
    n_boot: int,
    seed: int,
) -> pl.DataFrame:
    """Score the test images with every method; write per-label and macro AUC (with CIs), paired tests and scores."""
    memory = read_memory(memory_dir)
    neighbours = read_neighbours(test_neighbours, memory_dir)
    test = examples(neighbours, labels_path, uncertain)
    tokens = load_memory_tokens(memory_dir, torch.device("cpu"))
    scores = {}
    for method in METHODS:
        model, _ = load_classifier(Path(model_dir) / f"{method}.safetensors", Path(model_dir) / f"{method}.json")
        scores[method] = predict(model, test, tokens)
    image_targets, image_mask = targets_and_mask(tokens.image_states.numpy(), uncertain)
    report_targets, report_mask = targets_and_mask(tokens.report_states.numpy(), uncertain)
    rows_i, rows_r = neighbours.image_rows, neighbours.report_rows
    scores["knn"] = knn_scores(
        neighbours.image_scores,
        neighbours.report_scores,
        image_targets[rows_i],
        report_targets[rows_r],
        image_mask[rows_i],
        report_mask[rows_r],
    )

    evaluable = _evaluable(test.targets, test.mask)
    boot = metrics.bootstrap_multilabel_auc(scores, test.targets, test.mask, n_boot, seed) if len(test) else {}
    base = {"backbone": memory.get("backbone"), "variant": memory.get("variant")}
    rows = []
    positives = ((test.targets > 0.5) & (test.mask > 0)).sum(axis=0)
    counted = (test.mask > 0).sum(axis=0)
    for method, (observed, resampled) in boot.items():
        for j, name in enumerate(CHEXPERT_LABELS):
            if not evaluable[j]:
                continue
            low, high = metrics.percentile_interval(resampled[:, j])
            rows.append(
                {
                    **base,
                    "method": method,
                    "label": CHEXPERT_DISPLAY[name],
                    "value": observed[j],
                    "ci_low": low,
                    "ci_high": high,
                    "n_images": int(counted[j]),
                    "n_positive": int(positives[j]),
                }
            )
        if evaluable.any():
            macro = np.nanmean(resampled[:, evaluable], axis=1)
            low, high = metrics.percentile_interval(macro)
            rows.append(
                {
                    **base,
                    "method": method,
                    "label": MACRO,
                    "value": float(np.mean(observed[evaluable])),
                    "ci_low": low,
                    "ci_high": high,
                    "n_images": len(test),
                    "n_positive": int(evaluable.sum()),
                }
            )
    auc = pl.DataFrame(rows, schema=AUC_SCHEMA)
    paired = _paired(boot, evaluable, base, n_boot, len(test))
    Path(output_auc).parent.mkdir(parents=True, exist_ok=True)
    auc.write_parquet(output_auc)
    paired.write_parquet(output_paired)
    _scores_table(neighbours.image_ids, scores).write_parquet(output_scores)
    for row in auc.filter(pl.col("label") == MACRO).iter_rows(named=True):
        log.info(
            "%s macro AUC %.3f [%.3f, %.3f] over %d labels, %d test images",
            row["method"],
            row["value"],
            row["ci_low"],
            row["ci_high"],
            row["n_positive"],
            row["n_images"],
        )
    return auc


def _evaluable(targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(L,) whether a label has both classes among the test images it counts; logs the ones left out."""
    both = metrics.both_classes(targets, mask)
    left_out = [CHEXPERT_DISPLAY[name] for name, ok in zip(CHEXPERT_LABELS, both) if not ok]
    if left_out:
        log.warning("left out of the AUCs (not both classes among the test images): %s", ", ".join(left_out))
    return both


def _paired(boot: dict, evaluable: np.ndarray, base: dict, n_boot: int, n_images: int) -> pl.DataFrame:
    """Macro-AUC differences of each method against the query-only baseline, on the same resamples."""
    rows = []
    if BASELINE in boot and evaluable.any():
        observed_a, resampled_a = boot[BASELINE]
        macro_a = np.nanmean(resampled_a[:, evaluable], axis=1)
        for method, (observed, resampled) in boot.items():
            if method == BASELINE:
                continue
            test = metrics.paired_difference(
                float(np.mean(observed_a[evaluable])),
                float(np.mean(observed[evaluable])),
                macro_a,
                np.nanmean(resampled[:, evaluable], axis=1),
                n_boot,
            )
            rows.append(
                {
                    **base,
                    "method": method,
                    "baseline": BASELINE,
                    "metric": "macro_auc",
                    **test,
                    "n_boot": n_boot,
                    "n_images": n_images,
                }
            )
    return pl.DataFrame(rows, schema=PAIRED_SCHEMA)


def _scores_table(image_ids: np.ndarray, scores: dict[str, np.ndarray]) -> pl.DataFrame:
    """Long table of every method's probability per test image and observation."""
    frames = [
        pl.DataFrame(
            {
                "image_id": np.repeat(image_ids, len(CHEXPERT_LABELS)),
                "method": method,
                "label": np.tile(list(CHEXPERT_LABELS), len(image_ids)),
                "score": values.reshape(-1).astype(np.float64),
            }
        )
        for method, values in scores.items()
    ]
    return pl.concat(frames) if frames else pl.DataFrame()
