"""A Tune callback that signs each state save (outputs/trust.py) and keeps a good
copy of it (for repair_state)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from ray.tune import Callback

from search.outputs import trust
from search.outputs.ray_files import BACKUP_DIR, copy_newest_session

log = logging.getLogger(__name__)


class StateBackup(Callback):
    """Signs each experiment-state save, and keeps a copy of the last complete
    one in tune/.state-backup/.

    Ray calls ``get_state`` of every callback at the end of each save, when
    the state files of the save are written in full to the driver's staging
    folder, which Ray then uploads to the experiment's storage: that is when
    they are signed (the signatures file is uploaded with them, and put
    into a local results folder at once) and then copied.

    Args:
        experiment: the experiment's tune/ folder (path or URI), whose
            signatures (tuner.pkl's, earlier sessions') the first save keeps.
    """

    def __init__(self, experiment: str | None = None) -> None:
        self._staging: Path | None = None
        self._experiment: Path | None = None
        self._stored = experiment
        self._merged = False

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._staging is None and trials:
            self._locate(trials[0])

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        # A sweep stopped in its first step (Ctrl-C, a full disk) saves its
        # state once, after that step added its trials: sign that save too.
        if self._staging is None and trials:
            self._locate(trials[0])

    def _locate(self, trial: Any) -> None:
        storage = trial.storage
        self._staging = Path(storage.experiment_driver_staging_path)
        experiment = Path(storage.experiment_fs_path)
        if experiment.is_dir():  # a local results folder (not object storage)
            self._experiment = experiment

    def get_state(self) -> dict | None:
        if self._staging is None:
            return None
        try:
            trust.sign(str(self._staging), also=None if self._merged else self._stored)
            self._merged = True
            if self._experiment is not None:  # ahead of Ray's upload of the files it signs
                signatures = self._staging / trust.SIGNATURES_FILE
                fresh = self._experiment / f".{trust.SIGNATURES_FILE}.copy"
                shutil.copy2(signatures, fresh)
                fresh.replace(self._experiment / trust.SIGNATURES_FILE)
                copy_newest_session(self._staging, self._experiment / BACKUP_DIR)
        except Exception as exc:  # neither must stop the sweep; a resume then says why
            log.warning("could not sign or back up the experiment state: %s", exc)
        return None
