"""Optimizers with a backbone/head split, and per-step LR schedules with warmup."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR


def param_groups(
    model: nn.Module, lr: float, backbone_lr_mult: float, weight_decay: float
) -> list[dict]:
    """Head and backbone at their own learning rates; no decay on biases and norms.

    Frozen parameters are left out, so they get no optimizer state.
    """
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "head" if name.startswith("head.") else "backbone"
        groups.setdefault((part, param.ndim > 1), []).append(param)
    return [
        {
            "params": params,
            "lr": lr * (backbone_lr_mult if part == "backbone" else 1.0),
            "weight_decay": weight_decay if decays else 0.0,
            "name": f"{part}{'' if decays else '_no_decay'}",
        }
        for (part, decays), params in sorted(groups.items())
    ]


def build_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    backbone_lr_mult: float = 1.0,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    groups = param_groups(model, lr, backbone_lr_mult, weight_decay)
    on_cuda = any(p.is_cuda for g in groups for p in g["params"])
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=on_cuda or None)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
) -> LRScheduler:
    """A scheduler stepped once per batch over ``epochs`` epochs."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(warmup_epochs * steps_per_epoch, total - 1)
    if name == "onecycle":
        return OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total,
            pct_start=max(warmup / total, 0.05),
        )
    after = _decays[name]
    return LambdaLR(optimizer, lambda step: _factor(step, warmup, total, after))


def _factor(step: int, warmup: int, total: int, after) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return after((step - warmup) / max(1, total - warmup))


# Multipliers of the base lr as a function of progress in [0, 1] after warmup.
_decays = {
    "cosine": lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0))),
    "step": lambda t: 0.1 ** ((t >= 0.5) + (t >= 0.75)),
    "none": lambda t: 1.0,
}
