import math

import pytest
import torch

from mtcxr.losses import bce_loss, clip_loss, supcon_loss


def test_clip_loss_on_orthogonal_pairs():
    # logits = I: each row's cross-entropy is log(1 + e^-1), the same in both directions.
    eye = torch.eye(2)
    assert clip_loss(eye, eye, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_clip_loss_is_symmetric_and_falls_with_alignment():
    image = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0], [-1.0, 0.3]]), dim=1)
    aligned = clip_loss(image, image, 10.0).item()
    shuffled = clip_loss(image, image[[1, 2, 0]], 10.0).item()
    assert aligned < shuffled
    text = image[[1, 2, 0]]
    assert clip_loss(image, text, 10.0).item() == pytest.approx(clip_loss(text, image, 10.0).item(), abs=1e-6)


def test_supcon_loss_by_hand():
    # Two tight classes at T=1: each anchor's one positive scores 1, its two negatives 0.
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    expected = -(1.0 - math.log(math.e + 2.0))
    assert supcon_loss(features, torch.tensor([0, 0, 1, 1]), temperature=1.0).item() == pytest.approx(expected, abs=1e-6)


def test_supcon_loss_ignores_anchors_without_positives():
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    with_singleton = supcon_loss(features, torch.tensor([0, 0, 1]), temperature=1.0).item()
    # Anchors 0 and 1: positive scores 1, the other two keys score 1 and 0.
    assert with_singleton == pytest.approx(-(1.0 - math.log(math.e + 1.0)), abs=1e-6)


def test_bce_loss_with_pos_weight():
    logits, targets = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    assert bce_loss(logits, targets).item() == pytest.approx(math.log(2), abs=1e-6)
    # pos_weight scales only the positive term: (3 log 2 + log 2) / 2.
    assert bce_loss(logits, targets, pos_weight=3.0).item() == pytest.approx(2 * math.log(2), abs=1e-6)
