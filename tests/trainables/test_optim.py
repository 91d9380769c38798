"""Parameter groups and learning-rate schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.loop import train_epoch
from trainables.models import build_model
from trainables.optim import WeightEMA, build_optimizer, build_scheduler


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


def test_weight_ema_follows_its_warmed_up_decay():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.99)
    start = model[0].weight.detach().clone()
    expected = start.clone()
    for step in range(1, 4):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        ema.update(model)
        if step > 1:  # the first update copies; then decay min(0.99, (1 + n) / (10 + n))
            decay = min(0.99, step / (9 + step))
            expected = decay * expected + (1 - decay) * model[0].weight.detach()
        else:
            expected = model[0].weight.detach().clone()
        torch.testing.assert_close(ema.module[0].weight, expected)
    assert ema.updates == 3
    restored = WeightEMA(model, decay=0.99)
    restored.load_state_dict(ema.state_dict())
    torch.testing.assert_close(restored.module[0].weight, ema.module[0].weight)
    assert restored.updates == 3 and int(restored.averaged.n_averaged) == 3


def test_gradient_clipping_bounds_each_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, "none", epochs=1, steps_per_epoch=2)
    images = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8)
    labels = torch.zeros(8, dtype=torch.long)

    def step_size(clip: float) -> float:
        with torch.no_grad():
            for param, value in zip(model.parameters(), start, strict=True):
                param.copy_(value)
        train_epoch(
            model,
            [(images, labels)],
            optimizer,
            scheduler,
            nn.CrossEntropyLoss(),
            torch.device("cpu"),
            grad_clip=clip,
        )
        moved = [(p.detach() - v).flatten() for p, v in zip(model.parameters(), start, strict=True)]
        return float(torch.cat(moved).norm())

    unclipped, clipped = step_size(0.0), step_size(0.05)
    assert unclipped > 0.2 and clipped == pytest.approx(0.05, rel=1e-4)
