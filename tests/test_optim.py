"""Parameter groups and learning-rate schedules."""

from __future__ import annotations

import pytest
import torch

from trainables.models import build_model
from trainables.optim import build_optimizer, build_scheduler


def _lrs(name: str, warmup: int, epochs: int = 4, steps: int = 10) -> list[float]:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = build_scheduler(
        optimizer, name, epochs=epochs, steps_per_epoch=steps, warmup_epochs=warmup
    )
    values = []
    for _ in range(epochs * steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_warmup_rises_then_cosine_decays():
    lrs = _lrs("cosine", warmup=1)
    assert lrs[0] < 0.2 and lrs[9] == pytest.approx(1.0, abs=0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 0.01


def test_step_and_constant_schedules():
    step = _lrs("step", warmup=0)
    assert step[0] == 1.0 and step[25] == pytest.approx(0.1) and step[-1] == pytest.approx(0.01)
    assert set(_lrs("none", warmup=0)) == {1.0}


def test_onecycle_peaks_at_the_base_lr():
    lrs = _lrs("onecycle", warmup=1)
    assert max(lrs) == pytest.approx(1.0, rel=0.05)
    assert lrs[0] < 0.1 and lrs[-1] < 0.01


def test_backbone_gets_its_own_lr_and_no_decay_on_biases():
    model = build_model("resnet18", 3, frozen_depth=1, image_size=32)
    optimizer = build_optimizer(model, "adamw", lr=1e-3, backbone_lr_mult=0.1, weight_decay=0.05)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["head"]["lr"] == pytest.approx(1e-3)
    assert groups["backbone"]["lr"] == pytest.approx(1e-4)
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0
    assert groups["backbone"]["weight_decay"] == 0.05
    sgd = build_optimizer(model, "sgd", lr=0.1, momentum=0.8, nesterov=True)
    assert sgd.param_groups[0]["momentum"] == 0.8 and sgd.param_groups[0]["nesterov"]
