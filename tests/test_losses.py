import math

import pytest
import torch

from mtcxr.models.losses import bce_loss, clip_loss, label_supcon_loss, supcon_loss


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
    assert supcon_loss(features, torch.tensor([0, 0, 1, 1]), temperature=1.0).item() == pytest.approx(
        expected, abs=1e-6
    )


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


def label_sets(*sets: tuple[int, ...], width: int = 14) -> torch.Tensor:
    """Boolean (n x width) rows, row k positive on the indices in sets[k]."""
    rows = torch.zeros(len(sets), width, dtype=torch.bool)
    for row, indices in enumerate(sets):
        rows[row, list(indices)] = True
    return rows


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_label_supcon_loss_by_hand(temperature):
    # Y0 = {0, 1}, Y1 = {0}, Y2 = {0, 1, 2}, Y3 = {}: Jaccard w01 = 1/2, w02 = 2/3, w12 = 1/3 (unequal,
    # so a shared-count weighting would differ), and anchor 3 has no positive: it is skipped as an
    # anchor but stays a key in the others' denominators.
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    labels = label_sets((0, 1), (0,), (0, 1, 2), ())
    t = temperature
    score = {(0, 1): 0.0, (0, 2): 0.6, (0, 3): -1.0, (1, 2): 0.8, (1, 3): 0.0, (2, 3): -0.6}
    s = lambda i, j: score[min(i, j), max(i, j)] / t  # noqa: E731
    log_z = lambda i: math.log(sum(math.exp(s(i, a)) for a in range(4) if a != i))  # noqa: E731
    positives = {0: {1: 1 / 2, 2: 2 / 3}, 1: {0: 1 / 2, 2: 1 / 3}, 2: {0: 2 / 3, 1: 1 / 3}}
    anchor_losses = [
        -sum(w * (s(i, j) - log_z(i)) for j, w in ws.items()) / sum(ws.values()) for i, ws in positives.items()
    ]
    expected = sum(anchor_losses) / 3
    assert label_supcon_loss(features, labels, temperature=t).item() == pytest.approx(expected, abs=1e-6)
    # The same numbers written out for T = 1, anchor 0: -(1/2 (0 - log Z0) + 2/3 (0.6 - log Z0)) / (7/6).
    if t == 1.0:
        z0 = 1 + math.exp(0.6) + math.exp(-1)
        assert anchor_losses[0] == pytest.approx(math.log(z0) - (2 / 3 * 0.6) / (7 / 6), abs=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 0.1, 0.02])
def test_label_supcon_loss_is_supcon_on_a_partition(temperature):
    # One-hot label sets: Jaccard is 1 within a class and 0 across, so both losses (and gradients) agree.
    # Class 4 is a singleton: an anchor without positives in both.
    classes = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 4, 1, 2])
    raw = torch.randn(len(classes), 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    first, second = (torch.nn.functional.normalize(raw, dim=1).requires_grad_() for _ in range(2))
    one_hot = torch.nn.functional.one_hot(classes, num_classes=14).bool()
    multi = label_supcon_loss(first, one_hot, temperature)
    single = supcon_loss(second, classes, temperature)
    assert multi.item() == pytest.approx(single.item(), rel=1e-12)
    multi.backward()
    single.backward()
    torch.testing.assert_close(first.grad, second.grad, rtol=1e-10, atol=1e-12)


def test_label_supcon_loss_skips_anchors_without_positives():
    features = torch.nn.functional.normalize(torch.randn(5, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    # Anchors 0 and 1 share label 2; anchors 2-4 have empty sets (all not mentioned) or a set no one else has.
    labels = label_sets((2,), (2, 5), (), (), (7,))
    logits = features @ features.T
    log_prob = lambda i, j: (logits[i, j] - torch.logsumexp(logits[i][torch.arange(5) != i], dim=0)).item()  # noqa: E731
    expected = -(log_prob(0, 1) + log_prob(1, 0)) / 2  # w01 = 1/2 for both anchors; normalised away
    assert label_supcon_loss(features, labels, temperature=1.0).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "labels",
    [label_sets((), (), ()), label_sets((1,), (2,), (3,)), label_sets((1,))],
    ids=["all-empty", "disjoint", "one-sample"],
)
def test_label_supcon_loss_without_positives_is_a_zero_with_a_gradient(labels):
    features = torch.nn.functional.normalize(torch.randn(len(labels), 4), dim=1).requires_grad_()
    loss = label_supcon_loss(features, labels)
    assert loss.item() == 0.0 and loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_label_supcon_loss_gradient_is_correct_and_pulls_positives_together():
    raw = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    labels = label_sets((0,), (0, 1), (1,), (), (0, 13), (5,))
    loss = lambda x: label_supcon_loss(torch.nn.functional.normalize(x, dim=1), labels, 0.5)  # noqa: E731
    assert torch.autograd.gradcheck(loss, (raw,))
    value = loss(raw)
    value.backward()
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0
    stepped = loss((raw - 0.1 * raw.grad).detach())
    assert stepped.item() < value.item()  # a descent step lowers it


def test_label_supcon_loss_is_stable_at_a_small_temperature():
    # logits up to 1/1e-3 = 1000: exp() would overflow float32 without the row-max shift.
    raw = torch.randn(8, 4, generator=torch.Generator().manual_seed(3))
    features = torch.nn.functional.normalize(raw, dim=1).requires_grad_()
    labels = label_sets((0,), (0,), (1,), (1, 2), (2,), (), (0, 2), (3,))
    loss = label_supcon_loss(features, labels, temperature=1e-3)
    loss.backward()
    reference = label_supcon_loss(features.detach().double(), labels, temperature=1e-3)
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_label_supcon_loss_on_cuda_matches_cpu():
    features = torch.nn.functional.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(4)), dim=1)
    labels = torch.rand(16, 14, generator=torch.Generator().manual_seed(5)) < 0.3
    on_cpu = label_supcon_loss(features, labels).item()
    assert label_supcon_loss(features.cuda(), labels.cuda()).item() == pytest.approx(on_cpu, rel=1e-5)


def test_the_schema_lists_exactly_the_registered_losses():
    """One registry: the names a variant's `losses:` may hold are the keys of mtcxr.models.losses.LOSSES."""
    from pathlib import Path

    import yaml

    from mtcxr.models.losses import LOSSES

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    variant = schema["properties"]["variants"]["additionalProperties"]
    assert set(variant["properties"]["losses"]["properties"]) == set(LOSSES)
