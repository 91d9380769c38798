"""trainables/loop.py: the scores every epoch reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from trainables.loop import macro_f1, scores


def _cases():
    """Label vectors of every length up to 60 over up to 10 classes, and the edges."""
    generator = torch.Generator().manual_seed(0)
    for index in range(300):
        n, classes = 1 + index % 60, 1 + index % 10
        truth = torch.randint(classes, (n,), generator=generator)
        guessed = torch.randint(classes, (n,), generator=generator)
        yield truth, guessed
    yield torch.tensor([3, 3]), torch.tensor([3, 3])  # one class, all right
    yield torch.tensor([0, 0]), torch.tensor([5, 5])  # all wrong: classes never predicted
    yield torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])


def test_macro_f1_is_scikit_learns():
    for truth, guessed in _cases():
        expected = f1_score(truth.numpy(), guessed.numpy(), average="macro", zero_division=0)
        assert macro_f1(truth, guessed) == pytest.approx(expected, abs=1e-12), (truth, guessed)


def test_scores_of_logits():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    labels = torch.tensor([0, 1, 2, 2])
    got = scores(logits, labels)
    assert got["accuracy"] == 0.75
    assert got["f1_macro"] == pytest.approx(f1_score(labels, logits.argmax(1), average="macro"))
    assert got["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    assert got["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert got["min_recall"] == 0.5  # class 2: one of two


def test_balanced_accuracy_and_min_recall_are_scikit_learns():
    import warnings

    from sklearn.metrics import balanced_accuracy_score, recall_score

    for truth, guessed in _cases():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # y_pred holds classes y_true lacks
            balanced = balanced_accuracy_score(truth.numpy(), guessed.numpy())
        present = sorted(set(truth.tolist()))
        worst = recall_score(truth, guessed, labels=present, average=None, zero_division=0).min()
        got = scores(torch.nn.functional.one_hot(guessed, 12).float(), truth)
        assert got["balanced_accuracy"] == pytest.approx(balanced, abs=1e-12), (truth, guessed)
        assert got["min_recall"] == pytest.approx(worst, abs=1e-12), (truth, guessed)


def test_class_weights_are_scikit_learns_balanced_and_weigh_the_loss():
    from sklearn.utils.class_weight import compute_class_weight

    from trainables.augment import build_regularisation, weights_of

    labels = torch.tensor([0] * 90 + [1] * 10 + [2] * 30)
    counts = torch.bincount(labels)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels.numpy())
    assert weights_of(counts, "inverse").tolist() == pytest.approx(expected.tolist())
    root = weights_of(counts, "sqrt_inverse")
    assert (root * counts).sum().item() == pytest.approx(len(labels))  # images' weights average 1
    assert root[1] / root[0] == pytest.approx(3.0)  # sqrt(90 / 10)
    assert weights_of(counts, "none") is None
    assert weights_of(torch.tensor([5, 0, 5]), "inverse").tolist() == [1.0, 0.0, 1.0]

    logits, targets = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 1])
    loss = build_regularisation(counts, 16, class_weights="inverse", augmentation="none").loss
    weighted = torch.nn.functional.cross_entropy(
        logits, targets, weight=torch.tensor(expected, dtype=torch.float32)
    )
    assert loss(logits, targets).item() == pytest.approx(weighted.item())
    plain = build_regularisation(counts, 16, augmentation="none").loss(logits, targets)
    assert plain.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item())


def test_balanced_batches_see_each_class_equally_and_repeat_exactly_on_resume():
    from trainables.batches import CachedImages

    labels = torch.tensor([0] * 950 + [1] * 50)
    images = torch.arange(1000, dtype=torch.uint8).view(1000, 1, 1, 1)
    split = CachedImages(images, torch.arange(1000), labels, pin=False)

    def epoch(seed: int, balanced: bool) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        batches = split.batches(100, generator=generator, balanced=balanced)
        return torch.cat([batch_labels for _, batch_labels in batches])

    drawn = epoch(7, balanced=True)
    assert len(drawn) == 1000 and 0.44 < drawn.float().mean().item() < 0.56  # about half rare
    assert torch.equal(drawn, epoch(7, balanced=True))  # the same epoch after a resume
    assert not torch.equal(drawn, epoch(8, balanced=True))
    uniform = epoch(7, balanced=False)
    assert uniform.sum().item() == 50  # each image once
