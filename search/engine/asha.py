"""ASHA whose rungs survive a resume (Ray Tune's scheduler does not restore them)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.fs
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search.outputs.ray_files import stored_results, write_asha_stops
from trainables.limits import INFEASIBLE

log = logging.getLogger(__name__)


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs survive a resume.

    Ray Tune does not restore a scheduler's state (ray-project/ray#30838). A
    rung holds, for each trial that reached its milestone, the metric it had
    there, in the order results arrived. Every result is in Ray's result
    files with its report time, so replaying them in that order rebuilds the
    rungs an uninterrupted run would have, and the stop decisions it made.
    A trial whose stop was decided but not carried out before the driver
    died is stopped at its first result after the resume.

    Every stop decided (live or replayed) is written to the experiment's
    asha_stops.json, so the leaderboard can tell a trial ASHA stopped from
    one the time budget cut short (both end TERMINATED short of max_t).
    """

    _rebuilt = False
    _record_to: tuple[str, pyarrow.fs.FileSystem] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._replayed_stops: dict[str, int] = {}  # trial id -> epoch ASHA stopped it at
        self.stops: dict[str, int] = {}  # every stop decided, replayed ones included

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        if "stops" not in vars(self):  # unpickled from the tuner.pkl of an older ftsweep
            self.stops = {}
        if not self._rebuilt:
            self._rebuilt = True
            # The experiment folder is known from the trial's creation on (its
            # own folder is named only later, when it first starts): local,
            # a shared filesystem or object storage, wherever it was moved.
            storage = trial.storage
            self.replay(storage.experiment_fs_path, storage.storage_filesystem)
            self._record_to = (storage.experiment_fs_path, storage.storage_filesystem)
            self._record()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if INFEASIBLE in result:  # a limit stopped it before any epoch: not in the rungs
            return TrialScheduler.CONTINUE
        action = super().on_trial_result(tune_controller, trial, result)
        stopped_at = self._replayed_stops.get(trial.trial_id)
        if stopped_at is not None and result.get(self._time_attr, 0) >= stopped_at:
            if action != TrialScheduler.STOP:
                self._num_stopped += 1
            action = TrialScheduler.STOP
        epoch = result.get(self._time_attr)
        if not isinstance(epoch, int) or epoch >= self._max_t:
            return action  # max_t reached: ASHA's STOP there is the trial's end
        if action == TrialScheduler.STOP and trial.trial_id not in self.stops:
            self.stops[trial.trial_id] = epoch
            self._record()
        return action

    def stopped(self, trial_id: str) -> bool:
        """Whether ASHA stopped this trial (now or before a resume)."""
        return trial_id in vars(self).get("stops", {})

    def _record(self) -> None:
        if self._record_to is None:
            return
        try:
            write_asha_stops(*self._record_to, self.stops)
        except OSError as error:  # the leaderboard then shows them as stopped early
            log.warning("could not record ASHA's stops: %s", error)

    def replay(self, experiment_dir: str | Path, fs: pyarrow.fs.FileSystem | None = None) -> int:
        """Records every stored result in its bracket's rungs; returns how many."""
        assert self._metric is not None  # set by the Tuner before any trial is added
        results = stored_results(
            str(experiment_dir), fs or pyarrow.fs.LocalFileSystem(), self._metric, self._time_attr
        )
        brackets = self._brackets
        for trial_id, result in results:
            if INFEASIBLE in result:
                continue
            bracket = self._trial_info.get(trial_id, brackets[0])
            epoch = result[self._time_attr]
            action = bracket.on_result(
                SimpleNamespace(trial_id=trial_id), epoch, self._metric_op * result[self._metric]
            )
            if action == TrialScheduler.STOP and trial_id not in self._replayed_stops:
                self._replayed_stops[trial_id] = epoch
                if epoch < self._max_t:
                    self.stops.setdefault(trial_id, epoch)
        if results:
            log.info("ASHA: rebuilt rungs from %d stored results", len(results))
        return len(results)
