"""A Tune callback that stops a sweep like Ctrl-C when its disk fills up.

Ray Tune writes each trial's checkpoints, its results and the experiment state
into the results folder. A write that fails for lack of space costs the trial
that made it, and a failed write of the driver's own stops it with a
traceback. DiskGuard watches the free space of the folders the sweep writes
to and stops the sweep, as Ctrl-C does, while a checkpoint per running trial
still fits (so Ray's last state save and the leaderboard still fit too): every
unfinished trial keeps its last good checkpoint, and ``resume`` continues it.
A trial that fails on a full disk all the same (another program filled it
faster) stops the sweep at once; resume puts it back in the queue
(outputs/disk.py).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from search.outputs.disk import free_bytes, is_disk_full, last_failure
from search.outputs.text import size_text

log = logging.getLogger(__name__)

MARGIN = 64 * 1024**2  # Ray's state saves, result lines, the leaderboard, the report
CHECK_EVERY_S = 2.0


class DiskGuard(Callback):
    """Stops the sweep (SIGUSR1, which Ray's fit handles as it does Ctrl-C) when
    the free space of ``folder`` (and of a local experiment folder) falls
    below ``margin`` plus two checkpoints of the largest size seen per
    running trial, or when a trial fails on a full disk.

    ``stopped`` says why, once it stopped the sweep; ``folder`` is the one to name.
    """

    def __init__(self, folder: Path, margin: int | None = None) -> None:
        self.folder = folder
        self.margin = MARGIN if margin is None else margin
        self.stopped: str | None = None
        self._folders = [folder]
        self._largest = 0
        self._checked = 0.0

    def needed(self, running: int) -> int:
        return self.margin + 2 * self._largest * max(1, running)

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if len(self._folders) == 1 and trials:
            experiment = Path(trials[0].storage.experiment_fs_path)
            if experiment.is_dir() and experiment.resolve() != self.folder.resolve():
                self._folders.append(experiment)  # --storage: a shared folder
        if time.monotonic() - self._checked >= CHECK_EVERY_S:
            self._check(trials)

    def on_checkpoint(
        self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        path = Path(getattr(checkpoint, "path", ""))
        if path.is_dir():  # object storage: not this machine's disk
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            self._largest = max(self._largest, size)
        self._check(trials)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._after_failure(trials, trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._after_failure(trials, trial)

    def _after_failure(self, trials: list[Any], trial: Any) -> None:
        path = trial.error_file  # Ray wrote it just before calling back
        if path and is_disk_full(last_failure(Path(path))):
            self._stop(f"trial {trial.trial_id} could not save its checkpoint")
        else:
            self._check(trials)

    def _check(self, trials: list[Any]) -> None:
        self._checked = time.monotonic()
        running = sum(1 for t in trials if getattr(t, "status", "") == "RUNNING")
        needed = self.needed(running)
        for folder in self._folders:
            free = free_bytes(folder)
            if free is not None and free < needed:
                why = f"{size_text(free)} free in {folder}, {size_text(needed)} needed"
                trials_text = "1 running trial's" if running <= 1 else f"{running} running trials'"
                self._stop(f"{why} for {trials_text} next checkpoints")
                return

    def _stop(self, why: str) -> None:
        if self.stopped is not None:
            return
        self.stopped = why
        log.warning("the disk is full (%s): stopping the sweep as Ctrl-C would", why)
        handler = signal.getsignal(signal.SIGUSR1)
        if callable(handler):  # Ray's fit() handles it (on the main thread)
            os.kill(os.getpid(), signal.SIGUSR1)
        else:  # fit() on another thread: Ray's last state save, every few seconds, stays
            raise DiskFullStop(why)


class DiskFullStop(RuntimeError):
    """Raised out of Tune's loop where no signal can stop it (fit on a thread)."""
