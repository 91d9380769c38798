"""The hyperparameters the trainable understands, defined once.

The space loader validates every key and value against ``HPARAMS``; the
trainable turns a resolved mapping into an ``HParams`` and hands plain values
to the builders (model, optimizer, augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# Metric names reported every epoch (the keys of each ``tune.report``).
EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
VAL_F1_MACRO = "val_f1_macro"
TRAIN_SECONDS = "train_seconds"
EPOCH_SECONDS = "epoch_seconds"
STARTED_AT = "started_at"
REPORTED_AT = "reported_at"  # wall clock of the report: the order ASHA saw results in
PARAMS = "params"
LATENCY_MS = "latency_ms"  # inference, milliseconds per image at batch 1
THROUGHPUT = "throughput"  # inference, images per second at the trial's batch size
DEVICE = "device"  # what the trial trained (and was timed) on
IMAGES_DECODED = "images_decoded"  # decoded by this trial's (re)start itself: 0 = shared cache
NODE_ID = "node_id"  # the Ray node the trial ran on (its last one, after a move)
DATA = "data"  # cache (decoded once per node) or stream (decoded every epoch)

#: Metrics a sweep may optimise, with their natural direction.
METRICS: dict[str, str] = {VAL_ACCURACY: "max", VAL_LOSS: "min", VAL_F1_MACRO: "max"}

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULERS = ("cosine", "step", "onecycle", "none")
AUGMENTATIONS = ("none", "light", "strong", "randaugment", "trivialaugment")


@dataclass(frozen=True)
class HParamSpec:
    """What values one hyperparameter accepts."""

    type: type
    choices: tuple[Any, ...] | None = None
    lo: float | None = None  # inclusive lower bound
    hi: float | None = None  # exclusive upper bound
    only_for: tuple[str, str] | None = None  # (parent, option) it applies to
    words: tuple[str, ...] = ()  # names a number may also be given as (frozen_depth: all)
    help: str = ""


HPARAMS: dict[str, HParamSpec] = {
    "backbone": HParamSpec(str, help="a torchvision classification model name"),
    "weights": HParamSpec(str, help="DEFAULT, a torchvision weight name, none, or a file"),
    "frozen_depth": HParamSpec(
        int, lo=0, words=("all",), help="backbone stages frozen from the input; all = every one"
    ),
    "head_hidden": HParamSpec(int, lo=0, help="hidden units of the head; 0 = linear"),
    "head_dropout": HParamSpec(float, lo=0.0, hi=1.0),
    "optimizer": HParamSpec(str, choices=OPTIMIZERS),
    "weight_decay": HParamSpec(float, lo=0.0),
    "momentum": HParamSpec(float, lo=0.0, hi=1.0, only_for=("optimizer", "sgd")),
    "nesterov": HParamSpec(bool, only_for=("optimizer", "sgd")),
    "lr": HParamSpec(float, lo=1e-12),
    "backbone_lr_mult": HParamSpec(float, lo=0.0),
    "lr_scheduler": HParamSpec(str, choices=LR_SCHEDULERS),
    "warmup_epochs": HParamSpec(int, lo=0),
    "augmentation": HParamSpec(str, choices=AUGMENTATIONS),
    "label_smoothing": HParamSpec(float, lo=0.0, hi=1.0),
    "unfreeze_at": HParamSpec(int, lo=0, help="epoch from which frozen stages train; 0 = never"),
    "unfrozen_lr_mult": HParamSpec(float, lo=0.0, help="their lr = backbone lr x this"),
    "mixup_alpha": HParamSpec(float, lo=0.0, help="MixUp's Beta(alpha, alpha); 0 = off"),
    "cutmix_alpha": HParamSpec(float, lo=0.0, help="CutMix's Beta(alpha, alpha); 0 = off"),
    "ema": HParamSpec(float, lo=0.0, hi=1.0, help="decay per step of the weights' EMA; 0 = off"),
    "grad_clip": HParamSpec(float, lo=0.0, help="max gradient norm; 0 = off"),
}


@dataclass(frozen=True)
class HParams:
    """One trial's resolved hyperparameters (defaults for keys a space omits)."""

    backbone: str
    weights: str = "none"
    frozen_depth: int | str = 0  # or "all"
    head_hidden: int = 0
    head_dropout: float = 0.0
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    lr: float = 1e-3
    backbone_lr_mult: float = 1.0
    lr_scheduler: str = "cosine"
    warmup_epochs: int = 0
    augmentation: str = "light"
    label_smoothing: float = 0.0
    unfreeze_at: int = 0
    unfrozen_lr_mult: float = 0.1
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema: float = 0.0
    grad_clip: float = 0.0

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> HParams:
        """Builds from a flat ``{name: value}`` mapping, ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


assert set(HPARAMS) == {f.name for f in fields(HParams)}, "HPARAMS and HParams disagree"
