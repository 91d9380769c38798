"""trainables/loop.py: the scores every epoch reports."""

from __future__ import annotations

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
