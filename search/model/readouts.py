"""Trial checkpoints read, and run on the validation and test splits, once.

At a sweep's end three steps need the same figures: the finalists' test
scores (finalists.py), their ensemble (ensemble.py) and best/ (export.py).
Before, each read the checkpoints and ran them on the splits again: the best
trial's network was read three times and run five times. One ``Readouts``
serves all three (search/sweep.py's finish_sweep); ``export`` and
``export --ensemble`` from the command line make their own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from search.model.figures import Labelled, evaluation_sets, split_logits
from search.outputs.ray_files import trial_config
from search.space.loader import Space
from trainables.checkpoint_files import META_FILE
from trainables.checkpoints import load_state
from trainables.data import classes_of
from trainables.hparams import MODEL, HParams
from trainables.models import Classifier, inference_network
from trainables.weights import inference_weights, load_weights

Read = tuple[Classifier, HParams, dict]  # the network (CPU, eval mode), its hyperparameters, meta


def checkpoint_network(space: Space, checkpoint: Path, num_classes: int) -> Read:
    """The network of a trial's checkpoint (CPU, eval mode), its hyperparameters and metrics."""
    state = load_state(checkpoint)
    meta = json.loads((checkpoint / META_FILE).read_text())
    config = trial_config(checkpoint.parent)
    hparams = HParams.from_mapping(space.hparams(config))
    network = inference_network(hparams.group(MODEL), num_classes, space.data.image_size)
    load_weights(network, inference_weights(state))
    return network.eval(), hparams, meta


class Readouts:
    """The sweep's validation and test images (decoded on first use), and each
    checkpoint's network and logits on them (computed on first use)."""

    def __init__(self, space: Space, split: pd.DataFrame) -> None:
        self.space = space
        self.split = split
        self._sets: dict[str, Labelled] | None = None
        self._read: dict[str, Read] = {}
        self._logits: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def sets(self) -> dict[str, Labelled]:
        """The validation and test splits the sweep has and that can be read."""
        if self._sets is None:
            data = self.space.data
            self._sets = evaluation_sets(self.split, data.root, data.image_size)
        return self._sets

    def network(self, checkpoint: Path) -> Read:
        """checkpoint_network's result, read once (raises as it does)."""
        key = str(checkpoint)
        if key not in self._read:
            classes = len(classes_of(self.split))
            self._read[key] = checkpoint_network(self.space, checkpoint, classes)
        return self._read[key]

    def logits(self, checkpoint: Path) -> dict[str, torch.Tensor]:
        """The checkpoint's logits on each of ``sets`` (on the CPU), computed once."""
        key = str(checkpoint)
        if key not in self._logits:
            self._logits[key] = split_logits(self.network(checkpoint)[0], self.sets)
        return self._logits[key]
