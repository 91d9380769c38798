"""The hyperparameters the trainable understands, defined once: ``HPARAMS``.

One table says, for every key a space may search, what values it takes, its
default and the builder that consumes it (its ``group``). The space loader
validates against it; ``HParams``, the trainable's record of one trial, is
made from it; and each builder is called with its group
(``build_model(**hparams.group(MODEL), ...)``), so adding a hyperparameter
touches this table and the builder that uses it, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import TYPE_CHECKING, Any

# Metric names reported every epoch (the keys of each ``tune.report``).
EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
VAL_F1_MACRO = "val_f1_macro"
VAL_BALANCED_ACCURACY = "val_balanced_accuracy"  # the mean of the classes' recalls
VAL_MIN_RECALL = "val_min_recall"  # the worst class's recall
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
METRICS: dict[str, str] = {
    VAL_ACCURACY: "max",
    VAL_LOSS: "min",
    VAL_F1_MACRO: "max",
    VAL_BALANCED_ACCURACY: "max",
    VAL_MIN_RECALL: "max",
}

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULERS = ("cosine", "step", "onecycle", "none")
AUGMENTATIONS = ("none", "light", "strong", "randaugment", "trivialaugment")
CLASS_WEIGHTS = ("none", "inverse", "sqrt_inverse")


# The builders, and the groups of hyperparameters each takes as keyword arguments.
MODEL = "model"  # trainables.models.build_model
OPTIMIZER = "optimizer"  # trainables.optim.build_optimizer
SCHEDULE = "schedule"  # trainables.optim.build_scheduler
REGULARISATION = "regularisation"  # trainables.augment.build_regularisation
TRAINING = "training"  # the epoch loop itself (trainables.finetune.train)
GROUPS = (MODEL, OPTIMIZER, SCHEDULE, REGULARISATION, TRAINING)

_REQUIRED = object()  # a hyperparameter every trial must give (backbone)


@dataclass(frozen=True)
class HParam:
    """What values one hyperparameter accepts, its default, and who takes it."""

    group: str  # the builder that consumes it (GROUPS)
    type: type
    default: Any = _REQUIRED
    choices: tuple[Any, ...] | None = None
    lo: float | None = None  # inclusive lower bound
    hi: float | None = None  # exclusive upper bound
    only_for: tuple[str, str] | None = None  # (parent, option) it applies to
    words: tuple[str, ...] = ()  # names a number may also be given as (frozen_depth: all)
    help: str = ""


HPARAMS: dict[str, HParam] = {
    # build_model
    "backbone": HParam(MODEL, str, help="a torchvision classification model name"),
    "weights": HParam(
        MODEL, str, "none", help="DEFAULT, a torchvision weight name, none, or a file"
    ),
    "frozen_depth": HParam(
        MODEL, int, 0, lo=0, words=("all",), help="backbone stages frozen from the input"
    ),
    "head_hidden": HParam(MODEL, int, 0, lo=0, help="hidden units of the head; 0 = linear"),
    "head_dropout": HParam(MODEL, float, 0.0, lo=0.0, hi=1.0),
    "stochastic_depth": HParam(
        MODEL, float, None, lo=0.0, hi=1.0, help="torchvision's stochastic_depth_prob"
    ),
    # build_optimizer
    "optimizer": HParam(OPTIMIZER, str, "adamw", choices=OPTIMIZERS),
    "lr": HParam(OPTIMIZER, float, 1e-3, lo=1e-12),
    "backbone_lr_mult": HParam(OPTIMIZER, float, 1.0, lo=0.0),
    "weight_decay": HParam(OPTIMIZER, float, 0.01, lo=0.0),
    "momentum": HParam(OPTIMIZER, float, 0.9, lo=0.0, hi=1.0, only_for=("optimizer", "sgd")),
    "nesterov": HParam(OPTIMIZER, bool, False, only_for=("optimizer", "sgd")),
    "unfreeze_at": HParam(
        OPTIMIZER, int, 0, lo=0, help="epoch from which frozen stages train; 0 = never"
    ),
    "unfrozen_lr_mult": HParam(OPTIMIZER, float, 0.1, lo=0.0, help="their lr = backbone lr x this"),
    # build_scheduler
    "lr_scheduler": HParam(SCHEDULE, str, "cosine", choices=LR_SCHEDULERS),
    "warmup_epochs": HParam(SCHEDULE, int, 0, lo=0),
    # build_regularisation
    "augmentation": HParam(REGULARISATION, str, "light", choices=AUGMENTATIONS),
    "label_smoothing": HParam(REGULARISATION, float, 0.0, lo=0.0, hi=1.0),
    "class_weights": HParam(
        REGULARISATION,
        str,
        "none",
        choices=CLASS_WEIGHTS,
        help="the loss's class weights from the training split's counts: 1/n or 1/sqrt(n)",
    ),
    "mixup_alpha": HParam(
        REGULARISATION, float, 0.0, lo=0.0, help="MixUp's Beta(alpha, alpha); 0 = off"
    ),
    "cutmix_alpha": HParam(
        REGULARISATION, float, 0.0, lo=0.0, help="CutMix's Beta(alpha, alpha); 0 = off"
    ),
    # the epoch loop
    "ema": HParam(
        TRAINING, float, 0.0, lo=0.0, hi=1.0, help="decay per step of the weights' EMA; 0 = off"
    ),
    "grad_clip": HParam(TRAINING, float, 0.0, lo=0.0, help="max gradient norm; 0 = off"),
}


def _group(self: Any, name: str) -> dict[str, Any]:
    """The keyword arguments of one builder: ``{name: value}`` of its group."""
    if name not in GROUPS:
        raise ValueError(f"unknown group {name!r}; groups: {', '.join(GROUPS)}")
    return {key: getattr(self, key) for key, spec in HPARAMS.items() if spec.group == name}


def _from_mapping(cls: type, values: dict[str, Any]) -> Any:
    """Builds from a flat ``{name: value}`` mapping; an unknown name is an error."""
    unknown = sorted(set(values) - set(HPARAMS))
    if unknown:
        raise ValueError(
            f"unknown hyperparameters {', '.join(unknown)}; known: {', '.join(HPARAMS)}"
        )
    return cls(**values)


if TYPE_CHECKING:

    class HParams:
        """One trial's resolved hyperparameters (defaults for keys a space omits)."""

        def __init__(self, backbone: str, **values: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...
        def group(self, name: str) -> dict[str, Any]: ...
        @classmethod
        def from_mapping(cls, values: dict[str, Any]) -> HParams: ...

else:
    # A frozen dataclass with one field per row of HPARAMS, in the table's order
    # (backbone, the one without a default, first).
    HParams = make_dataclass(
        "HParams",
        [
            (name, spec.type)
            if spec.default is _REQUIRED
            else (name, spec.type, field(default=spec.default))
            for name, spec in HPARAMS.items()
        ],
        frozen=True,
        namespace={"group": _group, "from_mapping": classmethod(_from_mapping)},
    )
    HParams.__module__ = __name__
    HParams.__doc__ = "One trial's resolved hyperparameters (defaults for keys a space omits)."
