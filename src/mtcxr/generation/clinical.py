"""Clinical efficacy of generated reports: mtcxr's labeler run on generated and reference reports.

A finding is positive in a report when the labeler marks it positive, or uncertain under the
`positive` policy (the default, as the CheXpert-labeler-based efficacy scores of report
generation papers count it); `negative` counts uncertain as absent. No Finding is one of the 14
observations, so two normal reports agree on it.

From per-study true positives, false positives and false negatives (N, 14), `efficacy` gives
precision, recall and F1 micro-averaged (counts summed over observations, then the ratios)
and macro-averaged (the mean of per-observation ratios) over all 14 observations and over the
5 CheXpert competition observations, plus each observation's own. A ratio with a zero
denominator is 0 (scikit-learn's `zero_division=0`). Every function also takes a leading
batch axis, so a bootstrap of 1,000 resamples is one call.
"""

from __future__ import annotations

import numpy as np

from mtcxr.tables import CHEXPERT_LABELS

COMPETITION = ("atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion")
UNCERTAIN_POLICIES = ("positive", "negative")


def positive_findings(texts: list[str], uncertain: str = "positive") -> np.ndarray:
    """(N, 14) bool: the findings the labeler reads as present in each text."""
    from mtcxr.labels.engine import label_reports

    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"generation.uncertain is {uncertain!r}; choose one of {list(UNCERTAIN_POLICIES)}")
    labels = label_reports(list(texts))
    present = {1, -1} if uncertain == "positive" else {1}
    return (
        np.stack([labels[name].is_in(list(present)).fill_null(False).to_numpy() for name in CHEXPERT_LABELS], axis=1)
        if len(texts)
        else np.zeros((0, len(CHEXPERT_LABELS)), dtype=bool)
    )


def confusion(reference: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """(N, 3, 14) int: per-study true positives, false positives and false negatives of each finding."""
    reference, generated = np.asarray(reference, dtype=bool), np.asarray(generated, dtype=bool)
    return np.stack([reference & generated, ~reference & generated, reference & ~generated], axis=1).astype(np.int64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(
        numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape), where=denominator > 0
    )


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def efficacy(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Clinical-efficacy metrics of summed counts (..., 3, 14); each value has the leading shape.

    Keys: `{precision,recall,f1}_{micro,macro}` over the 14 observations, the same with a `5`
    suffix over the competition observations, and `{precision,recall,f1}_<observation>`.
    """
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = counts[..., 0, :], counts[..., 1, :], counts[..., 2, :]
    five = [CHEXPERT_LABELS.index(name) for name in COMPETITION]
    out: dict[str, np.ndarray] = {}
    for suffix, columns in (("", slice(None)), ("5", five)):
        t, p, n = tp[..., columns], fp[..., columns], fn[..., columns]
        for name, value in zip(("precision", "recall", "f1"), _prf(t.sum(-1), p.sum(-1), n.sum(-1))):
            out[f"{name}_micro{suffix}"] = value
        for name, value in zip(("precision", "recall", "f1"), _prf(t, p, n)):
            out[f"{name}_macro{suffix}"] = value.mean(-1)
    for name, value in zip(("precision", "recall", "f1"), _prf(tp, fp, fn)):
        for i, label in enumerate(CHEXPERT_LABELS):
            out[f"{name}_{label}"] = value[..., i]
    return out
