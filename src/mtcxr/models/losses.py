"""The losses of the projector heads (docs/design.md, Models): CLIP, supervised contrastive, BCE, and X-TRA's
multi-label supervised contrastive loss (`label_supcon`).

`LOSSES` is the one registry of loss names a variant's `losses:` may use (the config schema lists the
same names; a test holds them equal); `composite_loss` sums a variant's weighted terms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of paired, L2-normalised image and text embeddings.

    Row i of `image` and row i of `text` are a positive pair; every other row is a negative.
    """
    logits = logit_scale * image @ text.T
    targets = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def supcon_loss(features: torch.Tensor, classes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the L_out form) over L2-normalised features.

    For each anchor, the positives are the other samples of its class; the loss is the mean over
    anchors with at least one positive of -mean_p log softmax_{a != anchor}(z·z_p / T).
    """
    n = features.shape[0]
    logits = features @ features.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (classes[:, None] == classes[None, :]) & ~self_mask
    counts = positives.sum(dim=1)
    has_positive = counts > 0
    if not has_positive.any():
        return features.sum() * 0.0
    mean_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    mean_log_prob = mean_log_prob[has_positive] / counts[has_positive]
    return -mean_log_prob.mean()


def label_supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Multi-label supervised contrastive loss over L2-normalised features, with Jaccard-weighted positives.

    X-TRA (van Sonsbeek & Worring, IPMI 2023) fine-tunes CLIP with disease-class information; this is
    that class-informed term for multi-label studies.

    Inputs: `features` F (n x D), L2-normalised; `labels` Y (n x C) boolean label sets (for CheXpert,
    C = 14 and positive means label == 1: uncertain and not-mentioned are not positive, and
    `no_finding` is one of the 14, so normal studies share it and attract each other); `temperature` tau.

    Positive weight between anchors i != j: w_ij = Jaccard(Y_i, Y_j) = |Y_i & Y_j| / |Y_i | Y_j|,
    and 0 when both sets are empty (a study with no positive label has no positives). Then, for each
    anchor i with sum_{j != i} w_ij > 0,

        l_i = - sum_{j != i} w_ij * log( exp(f_i·f_j / tau) / sum_{a != i} exp(f_i·f_a / tau) ) / sum_{j != i} w_ij

    and the loss is the mean of l_i over those anchors; a zero that still depends on `features` (so
    backward works) when no anchor has a positive. With one-hot labels that partition the batch,
    w_ij is 1 within a class and 0 across, and this is exactly `supcon_loss` (Khosla L_out).
    """
    n = features.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    sets = labels.to(device=features.device, dtype=features.dtype)
    shared = sets @ sets.T  # |Y_i & Y_j|
    sizes = sets.sum(dim=1)
    union = sizes[:, None] + sizes[None, :] - shared  # |Y_i | Y_j|
    # clamp only guards the 0/0 of two empty sets; their weight is then 0 / 1 = 0 as the definition says.
    weight = (shared / union.clamp_min(1.0)).masked_fill(self_mask, 0.0)
    weight_sum = weight.sum(dim=1)
    has_positive = weight_sum > 0
    if not has_positive.any():
        return features.sum() * 0.0
    logits = features @ features.T / temperature
    # The anchor is not its own key: -inf drops it from the softmax's denominator.
    logits = logits.masked_fill(self_mask, float("-inf"))
    # Subtracting the (detached) row max keeps exp() finite at small tau; log-softmax is unchanged by it.
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    # Zero the non-positives (the diagonal's -inf among them) before weighting: 0 * -inf would be NaN.
    weighted = (torch.where(weight > 0, log_prob, torch.zeros_like(log_prob)) * weight).sum(dim=1)
    return -(weighted[has_positive] / weight_sum[has_positive]).mean()


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
    """Binary cross-entropy on normal (0) / abnormal (1) logits; `pos_weight` offsets class imbalance."""
    weight = None if pos_weight is None else torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=weight)


@dataclass
class LossBatch:
    """One batch as every loss term sees it: projected embeddings, classes, label sets and settings."""

    image: torch.Tensor  # (B, D) projected, L2-normalised
    text: torch.Tensor  # (B, D) projected, L2-normalised
    abnormal: torch.Tensor  # (B,) bool
    labels: torch.Tensor | None  # (B, 14) bool: CheXpert label == 1
    logit_scale: torch.Tensor | float
    abnormal_logit: Callable[[torch.Tensor], torch.Tensor]
    supcon_temperature: float
    pos_weight: float | None


def _clip_term(batch: LossBatch) -> torch.Tensor:
    return clip_loss(batch.image, batch.text, batch.logit_scale)


def _supcon_term(batch: LossBatch) -> torch.Tensor:
    # Both modalities are views of the study: a normal image should sit with normal reports too.
    features = torch.cat([batch.image, batch.text])
    return supcon_loss(features, torch.cat([batch.abnormal, batch.abnormal]).long(), batch.supcon_temperature)


def _label_supcon_term(batch: LossBatch) -> torch.Tensor:
    if batch.labels is None:
        raise ValueError("the `label_supcon` loss needs the batch's label sets; pass `labels`")
    # As for `supcon`, image and report are two views of the study, so labels repeat for both halves.
    features = torch.cat([batch.image, batch.text])
    return label_supcon_loss(features, torch.cat([batch.labels, batch.labels]), batch.supcon_temperature)


def _bce_term(batch: LossBatch) -> torch.Tensor:
    return bce_loss(batch.abnormal_logit(batch.image), batch.abnormal.float(), batch.pos_weight)


LOSSES: dict[str, Callable[[LossBatch], torch.Tensor]] = {
    "clip": _clip_term,
    "supcon": _supcon_term,
    "label_supcon": _label_supcon_term,
    "bce": _bce_term,
}
LOSS_NAMES = tuple(LOSSES)


def check_loss_names(weights: dict[str, float]) -> None:
    """Raise ValueError naming any loss of a variant's `losses:` that is not in the registry."""
    unknown = set(weights) - set(LOSSES)
    if unknown:
        raise ValueError(f"unknown loss(es) {sorted(unknown)} in the variant's `losses`; choose from {list(LOSSES)}")


def composite_loss(
    heads,
    image: torch.Tensor,
    text: torch.Tensor,
    abnormal: torch.Tensor,
    weights: dict[str, float],
    supcon_temperature: float,
    pos_weight: float,
    labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted sum of the variant's losses on one batch of `heads` inputs; returns each term and `total`.

    `labels` (batch x 14, bool: CheXpert label == 1) are the images' studies' label sets; only
    `label_supcon` reads them. Terms with weight 0 are not computed.
    """
    check_loss_names(weights)
    batch = LossBatch(
        heads.image(image),
        heads.text(text),
        abnormal,
        labels,
        heads.logit_scale,
        heads.abnormal_logit,
        supcon_temperature,
        pos_weight,
    )
    terms = {name: LOSSES[name](batch) for name in LOSSES if weights.get(name)}
    terms["total"] = sum(weights[name] * value for name, value in terms.items())
    return terms
