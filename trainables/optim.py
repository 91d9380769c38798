"""Optimizers with a backbone/head split, per-step LR schedules with warmup, weight EMA."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR
from torch.optim.swa_utils import AveragedModel


def param_groups(
    model: nn.Module,
    lr: float,
    backbone_lr_mult: float,
    weight_decay: float,
    unfrozen_lr_mult: float | None = None,
) -> list[dict]:
    """Head and backbone at their own learning rates; no decay on biases and norms.

    Frozen parameters are left out, so they get no optimizer state, unless
    ``unfrozen_lr_mult`` is given: then they form groups of their own at
    ``lr * backbone_lr_mult * unfrozen_lr_mult``, scheduled like the rest,
    which hold no state until the stages are unfrozen and get gradients.
    """
    head_prefixes = getattr(model, "head_prefixes", ("head.",))
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad and unfrozen_lr_mult is None:
            continue
        part = (
            "head"
            if name.startswith(head_prefixes)
            else "backbone"
            if param.requires_grad
            else "unfrozen"
        )
        groups.setdefault((part, param.ndim > 1), []).append(param)
    mults = {"head": 1.0, "backbone": backbone_lr_mult}
    mults["unfrozen"] = backbone_lr_mult * (unfrozen_lr_mult or 0.0)
    return [
        {
            "params": params,
            "lr": lr * mults[part],
            "weight_decay": weight_decay if decays else 0.0,
            "name": f"{part}{'' if decays else '_no_decay'}",
        }
        for (part, decays), params in sorted(groups.items())
    ]


def build_optimizer(
    model: nn.Module,
    optimizer: str,
    *,
    lr: float,
    backbone_lr_mult: float = 1.0,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    unfreeze_at: int = 0,
    unfrozen_lr_mult: float = 0.1,
) -> torch.optim.Optimizer:
    """AdamW or SGD over the head, backbone and (with ``unfreeze_at``) frozen groups.

    Frozen stages that unfreeze at epoch ``unfreeze_at`` get a parameter
    group of their own from the start, at the backbone's rate x
    ``unfrozen_lr_mult``, so the optimizer's state survives a resume.
    """
    unfreezes = unfreeze_at > 0 and getattr(model, "frozen_depth", 0) > 0
    groups = param_groups(
        model, lr, backbone_lr_mult, weight_decay, unfrozen_lr_mult if unfreezes else None
    )
    # PyTorch's fused kernels run on CUDA and, since 2.4, on the CPU: one pass
    # over all parameters instead of a Python loop per tensor (AdamW on the CPU
    # 10x faster a step for resnet18, benchmarks/results/).
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = (devices <= {"cuda", "cpu"} and bool(devices)) or None
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    if optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=momentum,
            nesterov=nesterov and momentum > 0,
            fused=fused,
        )
    raise ValueError(f"unknown optimizer {optimizer!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    lr_scheduler: str,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
) -> LRScheduler:
    """A scheduler stepped once per batch over ``epochs`` epochs."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(warmup_epochs * steps_per_epoch, total - 1)
    if lr_scheduler == "onecycle":
        return OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total,
            pct_start=max(warmup / total, 0.05),
        )
    after = _decays[lr_scheduler]
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


class WeightEMA:
    """An exponential moving average of a model's weights and buffers.

    torch's ``AveragedModel`` keeps the averaged copy; the decay is warmed up
    as ``min(decay, (1 + n) / (10 + n))`` after n updates, so the average is
    not dominated by the initial weights in a short fine-tuning run.
    BatchNorm statistics are averaged too (``use_buffers``).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.averaged = AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=True)
        self.averaged.eval()

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)
        self.updates += 1

    def _lerp(
        self,
        averaged: list[torch.Tensor] | tuple[torch.Tensor, ...],
        current: list[torch.Tensor] | tuple[torch.Tensor, ...],
        _count: torch.Tensor | int,
    ) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        else:  # integer buffers (BatchNorm's batch count) follow the model
            for mine, theirs in zip(averaged, current, strict=True):
                mine.copy_(theirs)

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
        self.averaged.n_averaged.fill_(max(1, self.updates))
