"""The shared fine-tuning trainable: data, models, optimizers, the training loop.

Names are imported on first use, so that ``trainables.errors`` or
``trainables.hparams`` (what a command reading a results folder needs) do not
import torch, torchvision and Ray with them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "HPARAMS": "trainables.hparams",
    "METRICS": "trainables.hparams",
    "HParams": "trainables.hparams",
    "TrialSetup": "trainables.finetune",
    "UserError": "trainables.errors",
    "build_model": "trainables.models",
    "supported_backbones": "trainables.backbones",
    "train": "trainables.finetune",
    "tune_trainable": "trainables.finetune",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")
