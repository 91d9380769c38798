"""The shared fine-tuning trainable: data, models, optimizers, the training loop."""

from trainables.backbones import supported_backbones
from trainables.errors import UserError
from trainables.finetune import TrialSetup, train, tune_trainable
from trainables.hparams import HPARAMS, METRICS, HParams
from trainables.models import build_model

__all__ = [
    "HPARAMS",
    "METRICS",
    "HParams",
    "TrialSetup",
    "UserError",
    "build_model",
    "supported_backbones",
    "train",
    "tune_trainable",
]
