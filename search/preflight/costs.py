"""What `ftsweep validate` estimates: seconds per trial from a short timed step,
and the sweep's length with and without ASHA's early stops."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from search.outputs.text import duration
from search.preflight.packing import suggest
from search.space.loader import Space
from trainables.finetune import amp_settings
from trainables.loop import autocast, classification_loss, to_device
from trainables.models import build_model
from trainables.optim import build_optimizer

TIMING_BUDGET_S = 30.0  # validate's timed steps in all; the rest are estimated from FLOPs
WARMUP_STEPS = 2  # allocations, the first optimizer step's state, cuDNN's choice of kernels
TIMED_STEPS = 3
SLOW_STEP_S = 5.0  # a warm-up step this slow is the estimate (a large model on a CPU)


@dataclass(frozen=True)
class TrialCost:
    backbone: str
    step_s: float  # one training step of a batch
    epoch_s: float  # training steps over the train split, and evaluation of val
    trial_s: float  # max_epochs epochs
    estimated: bool = False  # from its FLOPs and the timed backbones', not timed

    def describe(self, max_epochs: int) -> str:
        how = " (estimated from its FLOPs, not timed)" if self.estimated else ""
        return (
            f"{self.backbone}: {self.step_s * 1000:.0f} ms/step, {duration(self.epoch_s)}/epoch, "
            f"{duration(self.trial_s)} for {max_epochs} epochs{how}"
        )


def time_trials(
    space: Space,
    backbones: list[str],
    train: int,
    val: int,
    classes: int,
    device: torch.device,
    *,
    budget_s: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[TrialCost]:
    """Times a few training steps of each backbone at the sweep's image and batch size.

    With nothing frozen (the slowest frozen_depth) and no pretrained weights
    (the same work), on ``device``; evaluation is taken as a third of a step
    per batch of twice the size, as trials evaluate without gradients. Once
    ``budget_s`` (default TIMING_BUDGET_S) is spent, the backbones left are
    estimated from their FLOPs at the rate the timed ones ran (``estimated``);
    ``progress`` hears each line as it is known.
    """
    budget_s = TIMING_BUDGET_S if budget_s is None else budget_s
    batch = space.trial.batch_size
    steps = max(1, math.ceil(train / batch))
    eval_steps = math.ceil(val / (2 * batch)) if val else 0

    def cost(backbone: str, step_s: float, estimated: bool = False) -> TrialCost:
        epoch_s = step_s * steps + step_s / 3 * 2 * eval_steps
        found = TrialCost(backbone, step_s, epoch_s, epoch_s * space.trial.max_epochs, estimated)
        if progress is not None:
            progress(found.describe(space.trial.max_epochs))
        return found

    costs: dict[str, TrialCost] = {}
    threads = torch.get_num_threads()
    if device.type == "cpu":  # as many threads as a trial gets (trainables/finetune.py)
        torch.set_num_threads(max(1, int(space.resources.cpus)))
    started = time.perf_counter()
    try:
        for backbone in backbones:
            if costs and time.perf_counter() - started > budget_s:
                break
            step_s = time_step(
                backbone, space.data.image_size, batch, classes, device, space.trial.precision
            )
            costs[backbone] = cost(backbone, step_s)
    finally:
        torch.set_num_threads(threads)
    rates = [
        c.step_s / flops
        for c in costs.values()
        if (flops := step_gflop(c.backbone, space.data.image_size, batch))
    ]
    rate = sorted(rates)[len(rates) // 2] if rates else None
    mean = sum(c.step_s for c in costs.values()) / len(costs) if costs else 0.0
    for backbone in backbones:
        if backbone not in costs:
            flops = step_gflop(backbone, space.data.image_size, batch)
            costs[backbone] = cost(backbone, rate * flops if rate and flops else mean, True)
    return [costs[b] for b in backbones]


def step_gflop(backbone: str, image_size: int, batch: int) -> float | None:
    """Forward GFLOP of one batch (torchvision's count, scaled to the input size)."""
    found = suggest(backbone, image_size, batch)
    return found.step_gflop if found else None


def time_step(
    backbone: str, image_size: int, batch: int, classes: int, device: torch.device, precision: str
) -> float:
    """Seconds of one forward, backward and optimizer step (the mean of a few)."""
    torch.manual_seed(0)
    model = build_model(backbone, classes, weights="none", image_size=image_size).to(device)
    optimizer = build_optimizer(model, "adamw", lr=1e-3)
    amp_dtype, _ = amp_settings(precision, device)
    images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8)
    labels = torch.randint(0, classes, (batch,))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    elapsed = 0.0
    for step in range(WARMUP_STEPS + TIMED_STEPS):
        start = time.perf_counter()
        inputs = to_device(images, device)
        with autocast(device, amp_dtype):
            loss = classification_loss(model(inputs), labels.to(device), loss_fn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= WARMUP_STEPS:
            elapsed += time.perf_counter() - start
        elif step > 0 and time.perf_counter() - start > SLOW_STEP_S:
            return time.perf_counter() - start
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return elapsed / TIMED_STEPS
