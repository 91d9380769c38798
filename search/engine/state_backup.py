"""A Tune callback that keeps a good copy of each complete state save (for repair_state)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback

from search.outputs.ray_files import BACKUP_DIR, copy_newest_session

log = logging.getLogger(__name__)


class StateBackup(Callback):
    """Keeps a copy of the last complete experiment-state save in tune/.state-backup/.

    Ray calls ``get_state`` of every callback at the end of each save, when
    the three state files of the save are written in full to the driver's
    staging folder; that is when they are copied.
    """

    def __init__(self) -> None:
        self._staging: Path | None = None
        self._experiment: Path | None = None

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._staging is None and trials:
            storage = trials[0].storage
            experiment = Path(storage.experiment_fs_path)
            if experiment.is_dir():  # a local results folder (not object storage)
                self._staging = Path(storage.experiment_driver_staging_path)
                self._experiment = experiment

    def get_state(self) -> dict | None:
        if self._staging is not None and self._experiment is not None:
            try:
                copy_newest_session(self._staging, self._experiment / BACKUP_DIR)
            except OSError as exc:  # a backup must never stop the sweep
                log.warning("could not back up the experiment state: %s", exc)
        return None
