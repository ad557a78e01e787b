"""The three losses of the multi-task head (DESIGN §5): CLIP, supervised contrastive, and BCE."""

from __future__ import annotations

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


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
    """Binary cross-entropy on normal (0) / abnormal (1) logits; `pos_weight` offsets class imbalance."""
    weight = None if pos_weight is None else torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=weight)
