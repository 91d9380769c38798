"""One training epoch and one evaluation pass: plain PyTorch, no Ray."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext

import torch
from torch import nn

from trainables.augment import Augment, normalize_float
from trainables.models import AUX_WEIGHT, AuxOutputs


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision on GPU only; the CPU trains in fp32."""
    if dtype is None or device.type != "cuda":
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def to_device(
    images: torch.Tensor, device: torch.device, augment: Augment | None = None
) -> torch.Tensor:
    """uint8 batch -> augmented, normalised float batch on the device (channels_last on GPU).

    The uint8 batch crosses to the device (4x fewer bytes than floats, and
    asynchronously from pinned memory); augmentation runs there.
    """
    batch = images.to(device, non_blocking=True)
    batch = augment(batch) if augment is not None else batch.float().div_(255.0)
    batch = normalize_float(batch)
    return batch.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else batch


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    augment: Augment | None = None,
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    grad_clip: float = 0.0,
    after_step: Callable[[], None] | None = None,
) -> float:
    """Trains one pass over ``batches``; returns the mean training loss.

    Args:
        batches: uint8 NCHW images (on the CPU) and their labels.
        augment: the preset, run on the device on each uint8 batch.
        mix: MixUp/CutMix on the normalised batch (labels become soft targets).
        grad_clip: the largest gradient norm (0: no clipping).
        after_step: called after each optimizer step (the weights' EMA).
    """
    model.train()
    total, count = 0.0, 0
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for images, labels in batches:
        inputs = to_device(images, device, augment)
        targets = labels.to(device, non_blocking=True)
        if mix is not None:
            inputs, targets = mix(inputs, targets)
        with autocast(device, amp_dtype):
            loss = classification_loss(model(inputs), targets, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step()
        total += float(loss.detach()) * len(labels)
        count += len(labels)
    return total / max(1, count)


def classification_loss(
    outputs: torch.Tensor | AuxOutputs, targets: torch.Tensor, loss_fn: nn.Module
) -> torch.Tensor:
    """The loss of the logits, plus Inception V3's weighted auxiliary loss in training."""
    if isinstance(outputs, AuxOutputs):
        return loss_fn(outputs.logits, targets) + AUX_WEIGHT * loss_fn(outputs.aux, targets)
    return loss_fn(outputs, targets)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    *,
    batch_size: int = 256,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits for uint8 NCHW images, in eval mode, batched, returned on the CPU."""
    batches = (images[start : start + batch_size] for start in range(0, len(images), batch_size))
    return _logits(model, batches, device, amp_dtype)


@torch.no_grad()
def _logits(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    model.eval()
    outputs = []
    for images in batches:
        with autocast(device, amp_dtype):
            logits = model(to_device(images, device))
        outputs.append(logits.float().to("cpu", non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the non-blocking copies have landed
    return torch.cat(outputs) if outputs else torch.empty(0)


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    *,
    batch_size: int = 256,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Loss, accuracy and macro F1 over a split."""
    logits = predict_logits(model, images, device, batch_size=batch_size, amp_dtype=amp_dtype)
    return scores(logits, labels)


def evaluate_batches(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """``evaluate`` over (uint8 images, labels) batches, without autograd."""
    labels: list[torch.Tensor] = []

    def images() -> Iterable[torch.Tensor]:
        for batch, batch_labels in batches:
            labels.append(batch_labels)
            yield batch

    logits = _logits(model, images(), device, amp_dtype)
    return scores(logits, torch.cat(labels))


def scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy, macro F1, balanced accuracy (the mean of the classes'
    recalls) and the worst class's recall, of logits against integer labels."""
    predicted = logits.argmax(dim=1)
    recalls = class_recalls(labels, predicted)
    return {
        "loss": float(nn.functional.cross_entropy(logits, labels)),
        "accuracy": float((predicted == labels).float().mean()),
        "f1_macro": macro_f1(labels, predicted),
        "balanced_accuracy": float(recalls.mean()),
        "min_recall": float(recalls.min()),
    }


def class_recalls(labels: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Each class's recall, over the classes present in ``labels`` (scikit-learn's
    ``balanced_accuracy_score`` is their mean)."""
    count = int(torch.cat([labels, predicted]).max()) + 1
    truth = torch.bincount(labels, minlength=count)
    hits = torch.bincount(labels[labels == predicted], minlength=count)
    present = truth > 0
    return hits[present].double() / truth[present]


def macro_f1(labels: torch.Tensor, predicted: torch.Tensor) -> float:
    """scikit-learn's ``f1_score(labels, predicted, average="macro")``: the mean F1
    over the classes in either, 0 for a class never predicted correctly.

    Here rather than scikit-learn's, whose import (1.3 s) every trial's worker
    process would pay before its first epoch (tests/test_layout.py keeps it
    out of them); tests/trainables/test_loop.py compares the two.
    """
    count = int(torch.cat([labels, predicted]).max()) + 1
    truth = torch.bincount(labels, minlength=count)
    guessed = torch.bincount(predicted, minlength=count)
    hits = torch.bincount(labels[labels == predicted], minlength=count)
    present = (truth + guessed) > 0
    # F1 = 2 TP / (2 TP + FP + FN), and 2 TP + FP + FN = (TP + FN) + (TP + FP).
    return float((2 * hits[present].double() / (truth + guessed)[present]).mean())


@torch.no_grad()
def measure_speed(
    model: nn.Module,
    image_size: int,
    device: torch.device,
    *,
    batch_size: int,
    amp_dtype: torch.dtype | None = None,
    min_seconds: float = 0.25,
    max_seconds: float = 1.0,
) -> tuple[float, float]:
    """Inference speed on ``device``: (ms per image at batch 1, images/s at ``batch_size``).

    Times forward passes of a zero batch in eval mode (no RNG is drawn and no
    state changes, so training is unaffected) and takes the median of at
    least three timed passes or of ``min_seconds`` of them, but stops after
    ``max_seconds`` with at least one, so that a large model on a CPU costs
    its trial a pass or two, not minutes. A warm-up pass comes first at
    batch 1, and on a GPU at every size (cuDNN's algorithm search).
    """
    was_training = model.training
    model.eval()

    def median_seconds(size: int, warm_up: bool) -> float:
        batch = torch.zeros(size, 3, image_size, image_size, device=device)
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        times: list[float] = []
        for rep in range(51):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            tic = time.perf_counter()
            with autocast(device, amp_dtype):
                model(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if rep or not warm_up:
                times.append(time.perf_counter() - tic)
            enough = len(times) >= 3 and sum(times) >= min_seconds
            if times and (enough or sum(times) >= max_seconds):
                break
        return statistics.median(times)

    try:
        latency_ms = 1000.0 * median_seconds(1, warm_up=True)
        throughput = batch_size / median_seconds(batch_size, warm_up=device.type == "cuda")
    finally:
        model.train(was_training)
    return latency_ms, throughput
