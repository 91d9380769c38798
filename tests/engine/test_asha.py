"""ASHA makes the same stop/continue decisions whether or not the sweep was interrupted.

Scripted metric curves are fed to the scheduler the way Ray Tune's driver
does it (decision, then the result is written to the trial's result.json),
without Ray itself: each trial i reports epoch e at time start_i + e, so the
order of reports is fixed and any difference comes from the scheduler alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search.engine.tuner import ResumableASHA
from trainables.hparams import EPOCH, REPORTED_AT

MAX_T, GRACE, RF = 9, 1, 3  # rungs at epochs 1 and 3
METRIC = "val_accuracy"

# Good, bad, late bloomers, early stars that fade; trials start one time step apart.
CURVES = {
    f"t{i:02d}": [round(base + slope * e + bump * (e >= 4), 3) for e in range(1, MAX_T + 1)]
    for i, (base, slope, bump) in enumerate(
        [
            (0.50, 0.04, 0.00),
            (0.30, 0.02, 0.00),
            (0.60, 0.01, 0.00),
            (0.20, 0.08, 0.00),
            (0.55, 0.00, 0.10),
            (0.40, 0.05, 0.00),
            (0.35, 0.01, 0.30),
            (0.65, 0.03, 0.00),
            (0.10, 0.02, 0.00),
            (0.45, 0.06, 0.00),
            (0.58, 0.02, 0.00),
            (0.25, 0.09, 0.00),
        ]
    )
}
EVENTS = [
    (trial, epoch)
    for _, _, trial, epoch in sorted(
        (start + epoch, start, trial, epoch)
        for start, trial in enumerate(CURVES)
        for epoch in range(1, MAX_T + 1)
    )
]


def _scheduler(cls: type = ResumableASHA) -> ASHAScheduler:
    return cls(
        time_attr=EPOCH,
        metric=METRIC,
        mode="max",
        max_t=MAX_T,
        grace_period=GRACE,
        reduction_factor=RF,
    )


class Driver:
    """Plays Ray Tune's part: asks the scheduler, writes result.json, stops trials."""

    def __init__(self, folder: Path, scheduler: ASHAScheduler) -> None:
        self.folder = folder
        self.scheduler = scheduler
        self.stopped: dict[str, int] = {}  # trial -> epoch of its last result
        self.decisions: list[tuple[str, int, str]] = []
        for trial in CURVES:  # Ray adds every trial of a restored experiment
            scheduler.on_trial_add(None, self._trial(trial))

    def _trial(self, trial_id: str) -> SimpleNamespace:
        storage = SimpleNamespace(
            experiment_fs_path=str(self.folder), storage_filesystem=pyarrow.fs.LocalFileSystem()
        )
        return SimpleNamespace(trial_id=trial_id, storage=storage)

    def report(self, trial: str, epoch: int, *, write: bool = True, act: bool = True) -> None:
        if trial in self.stopped:
            return
        reported_at = float(EVENTS.index((trial, epoch)))  # the report's time
        result = {EPOCH: epoch, METRIC: CURVES[trial][epoch - 1], REPORTED_AT: reported_at}
        action = self.scheduler.on_trial_result(None, self._trial(trial), result)
        self.decisions.append((trial, epoch, action))
        if write:
            out = self.folder / f"trial_{trial}"
            out.mkdir(parents=True, exist_ok=True)
            with (out / "result.json").open("a") as f:
                f.write(json.dumps(result) + "\n")
        if act and action == TrialScheduler.STOP:
            self.scheduler.on_trial_complete(None, self._trial(trial), result)
            self.stopped[trial] = epoch


def _outcome(driver: Driver) -> tuple[dict[str, int], list[dict[str, float]]]:
    """Where each trial stopped, and the rungs' recorded values."""
    rungs = [dict(recorded) for _, recorded in driver.scheduler._brackets[0]._rungs]
    return dict(driver.stopped), rungs


def _uninterrupted(folder: Path) -> Driver:
    driver = Driver(folder, _scheduler())
    for trial, epoch in EVENTS:
        driver.report(trial, epoch)
    return driver


def _kill_points() -> list[int]:
    """Indexes of reports at a rung (epoch 1 or 3) that ASHA answered with a stop."""
    driver = Driver(Path("/nonexistent"), _scheduler())  # nothing is written
    points = []
    for index, (trial, epoch) in enumerate(EVENTS):
        before = len(driver.stopped)
        driver.report(trial, epoch, write=False)
        if len(driver.stopped) > before and epoch in (1, 3):
            points.append(index)
    return points


def _interrupted(folder: Path, at: int, lost: str, cls: type = ResumableASHA) -> Driver:
    """Runs to report `at`, kills the driver, resumes with a fresh scheduler.

    lost: "nothing" (killed after report `at` was acted on), "stop" (its result
    was written but the stop not carried out) or "result" (decided, not written).
    """
    first = Driver(folder, _scheduler())
    for trial, epoch in EVENTS[:at]:
        first.report(trial, epoch)
    trial, epoch = EVENTS[at]
    first.report(trial, epoch, write=lost != "result", act=lost == "nothing")
    resumed = Driver(folder, _scheduler(cls))
    resumed.stopped = dict(first.stopped)
    # A trial killed mid-way continues from its checkpoint and reports that epoch again.
    for trial, epoch in EVENTS[at if lost != "nothing" else at + 1 :]:
        resumed.report(trial, epoch)
    resumed.decisions = first.decisions + resumed.decisions
    return resumed


def test_curves_exercise_both_rungs(tmp_path):
    stopped, rungs = _outcome(_uninterrupted(tmp_path))
    assert {1, 3, MAX_T} <= set(stopped.values())  # stopped at each rung; some finished
    assert len(rungs[-1]) == len(CURVES)  # everyone reached rung 1
    assert 0 < len(rungs[0]) < len(CURVES)  # some were stopped before rung 3
    assert len(_kill_points()) >= 3


@pytest.mark.parametrize("lost", ["nothing", "stop", "result"])
def test_decisions_identical_after_an_interruption_at_a_rung(tmp_path, lost):
    expected = _outcome(_uninterrupted(tmp_path / "straight"))
    for n, at in enumerate(_kill_points()):
        got = _outcome(_interrupted(tmp_path / f"{lost}-{n}", at, lost))
        assert got == expected, f"interrupted at report {at} ({EVENTS[at]}), lost: {lost}"


def test_plain_asha_forgets_its_rungs_on_resume(tmp_path):
    """The control: Ray's own ASHAScheduler decides differently after a resume."""
    expected = _outcome(_uninterrupted(tmp_path / "straight"))
    at = _kill_points()[1]
    assert _outcome(_interrupted(tmp_path / "plain", at, "nothing", ASHAScheduler)) != expected


@pytest.mark.parametrize("lost", ["nothing", "stop", "result"])
def test_every_stop_is_recorded_for_the_leaderboard_after_an_interruption_too(tmp_path, lost):
    """asha_stops.json names each trial ASHA stopped short of max_t (not the
    ones that finished), so the leaderboard can tell them from trials the time
    budget cut short: both end TERMINATED in Ray's state."""
    straight = _uninterrupted(tmp_path / "straight")
    expected = {trial: epoch for trial, epoch in straight.stopped.items() if epoch < MAX_T}
    assert expected and len(expected) < len(CURVES)
    assert json.loads((tmp_path / "straight" / "asha_stops.json").read_text()) == expected
    at = _kill_points()[1]
    resumed = _interrupted(tmp_path / "resumed", at, lost)
    assert json.loads((tmp_path / "resumed" / "asha_stops.json").read_text()) == expected
    assert all(resumed.scheduler.stopped(t) for t in expected)
    assert not any(resumed.scheduler.stopped(t) for t in set(CURVES) - set(expected))
