"""The compact live view of a running sweep (Ray's tables come back with --verbose).

One line per notable event (a trial finished, was stopped early, errored,
was retried, or set a new best) and a status line: trials done out of the
total, running, best so far, elapsed, and an estimate of the time left. On
a terminal the status line is redrawn in place; piped to a log file it is
printed after each trial that ends and every few minutes, with no control
characters.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from ray.tune import Callback

from search.outputs.ray_files import trial_error
from search.outputs.text import clock_time, duration, finite_number, short_value
from search.space.expect import asha_epochs
from trainables.hparams import EPOCH
from trainables.limits import INFEASIBLE

CLEAR_LINE = "\r\x1b[K"
REDRAW_S = 1.0  # on a terminal
HEARTBEAT_S = 300.0  # in a log file, when nothing else was printed
BUDGET_SLACK_S = 5.0  # trials Ray stops this close to the time budget were cut by it


@dataclass
class Counts:
    """Where the sweep's trials are, from the trials Ray holds (restored ones too)."""

    total: int
    completed: int = 0
    stopped_early: int = 0
    out_of_time: int = 0  # cut short by the time budget
    infeasible: int = 0  # stopped before their first epoch by search.constraints
    errored: int = 0
    running: int = 0
    pending: int = 0

    @property
    def done(self) -> int:
        return (
            self.completed + self.stopped_early + self.out_of_time + self.infeasible + self.errored
        )

    @property
    def not_started(self) -> int:
        return max(0, self.total - self.done - self.running - self.pending)


@dataclass
class Best:
    trial_id: str
    value: float
    epoch: int | None
    config: str


@dataclass
class SweepProgress(Callback):
    """Ray Tune callback that prints the sweep's progress to ``out`` (stdout).

    Args:
        metric, mode: the sweep's metric and whether higher ("max") is better.
        num_samples: the trials the sweep plans (resume: with --add's too).
        max_epochs: a trial that ends sooner without an error was stopped early.
        time_budget_s: Ray stops starting trials after this long (None: no budget).
        grace_period, reduction_factor: ASHA's, for the estimate of the time left.
        stopped_by_asha: whether ASHA stopped a trial (the scheduler's own
            record); a trial ended short otherwise was cut by the time budget.
            None: judged by the clock (ended within seconds of the budget).
    """

    metric: str
    mode: str
    num_samples: int
    max_epochs: int
    time_budget_s: float | None = None
    grace_period: int | None = None  # ASHA's (None: no early stopping)
    reduction_factor: float = 3.0
    stopped_by_asha: Callable[[str], bool] | None = None
    title: str = ""  # the first line printed
    constants: frozenset[str] = frozenset()  # config keys the space fixes: not shown
    out: TextIO | None = None  # None: sys.stdout when printing (Ray pickles callbacks)
    tty: bool | None = None  # None: whether ``out`` is a terminal
    clock: Any = time.monotonic

    def __post_init__(self) -> None:
        if self.tty is None:
            isatty = getattr(self.stream, "isatty", None)
            self.tty = bool(isatty and isatty())
        self._start = self.clock()
        self._epoch_s: list[float] = []  # seconds of each epoch reported (evaluation included)
        self._running_epochs: list[int] = []  # epochs each running trial has trained
        self._slots = 0  # the most trials seen running at once
        self._best: Best | None = None  # the best result of any trial at any epoch
        self._announced: Best | None = None  # the best among trials that ended
        self._seeded = False  # the best of trials a resume restored
        self._live: set[str] = set()  # trials started in this session and not ended
        self._counts = Counts(self.num_samples)
        self._last_print = self._start
        self._last_draw = -math.inf
        self._status_shown = False  # a terminal's status line is on screen
        self._said_started = False  # a log file has the first status line
        self._last_summary: tuple = ()

    @property
    def stream(self) -> TextIO:
        return self.out or sys.stdout

    # Ray Tune's callback hooks ------------------------------------------------

    def setup(self, *args: Any, **info: Any) -> None:
        if self.title:
            self._write(f"{clock_time()} {self.title}\n")

    def on_step_begin(self, iteration: int, trials: list, **info: Any):
        if not self._seeded:  # before any new result: what a resumed sweep already has
            self._seeded = True
            for trial in trials:
                epochs = (trial.last_result or {}).get(EPOCH)
                if epochs:  # restored: its mean epoch
                    self._epoch_s.append(_trained(trial) / epochs)
                best = finite_number(trial.metric_analysis.get(self.metric, {}).get(self.mode))
                if best is not None and self._better(best, self._best):
                    self._best = Best(trial.trial_id, best, None, self._config(trial))
            self._announced = self._best
            if self._best is not None:
                self._count(trials)
                self._event(
                    f"resumed    {len(trials)} trials so far; best {self.metric} "
                    f"{self._best.value:.4f} ({self._best.trial_id}): {self._best.config}"
                )

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any):
        seconds = finite_number(result.get("time_this_iter_s"))
        if seconds is not None:
            self._epoch_s.append(seconds)
        value = finite_number(result.get(self.metric))
        if value is not None and self._better(value, self._best):
            self._best = Best(trial.trial_id, value, result.get(EPOCH), self._config(trial))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any):
        self._live.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
        self._ended(trial)
        self._summary(trials, ended=(trial, "TERMINATED"))

    def _ended(self, trial: Any) -> None:
        """The lines of a trial that ended without an error."""
        self._live.discard(trial.trial_id)
        epoch = (trial.last_result or {}).get(EPOCH)
        best = finite_number(trial.metric_analysis.get(self.metric, {}).get(self.mode))
        score = f"best {self.metric} {best:.4f}" if best is not None else "no result"
        broken = (trial.last_result or {}).get(INFEASIBLE)
        if broken:
            self._event(f"infeasible {trial.trial_id}  {broken}: stopped before its first epoch")
            return
        if self._completed(trial):
            self._event(f"finished   {trial.trial_id}  {score}, {epoch} epochs")
        elif self._out_of_time(trial):
            at = f"at epoch {epoch}: {score}" if epoch is not None else "before its first epoch"
            self._event(f"cut short  {trial.trial_id}  by the time budget {at}")
        else:
            self._event(f"stopped    {trial.trial_id}  early by ASHA at epoch {epoch}: {score}")
        if best is not None and self._better(best, self._announced):
            self._announced = Best(trial.trial_id, best, None, self._config(trial))
            self._event(
                f"new best   {trial.trial_id}  {self.metric} {best:.4f}: {self._config(trial)}"
            )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any):
        self._live.discard(trial.trial_id)
        self._event(f"errored    {trial.trial_id}  {trial_error(trial.error_file)}")
        self._summary(trials, ended=(trial, "ERROR"))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any):
        error = trial_error(trial.error_file)
        self._event(f"retrying   {trial.trial_id}  from its last checkpoint after: {error}")

    def on_step_end(self, iteration: int, trials: list, **info: Any):
        now = self.clock()
        if self.tty and now - self._last_draw >= REDRAW_S:
            self._count(trials)
            self._draw(self.status_line())
        elif not self.tty:
            started = any(t.status == "RUNNING" for t in trials)
            if (started and not self._said_started) or now - self._last_print >= HEARTBEAT_S:
                self._said_started = self._said_started or started
                self._summary(trials, force=True)

    def on_experiment_end(self, trials: list, **info: Any):
        for trial in trials:  # Ray stops trials at the budget's end without telling callbacks
            if trial.trial_id in self._live and trial.status == "TERMINATED":
                self._ended(trial)
        self._summary(trials)
        if self.tty and self._status_shown:
            self.stream.write("\n")
            self._status_shown = False
        self.stream.flush()

    # The view ------------------------------------------------------------------

    def status_line(self) -> str:
        c = self._counts
        parts = [
            f"{c.done}/{c.total} trials done ({c.completed} completed, "
            f"{c.stopped_early} stopped early, "
            + (f"{c.out_of_time} cut by the time budget, " if c.out_of_time else "")
            + (f"{c.infeasible} infeasible, " if c.infeasible else "")
            + f"{c.errored} errored)",
            f"{c.running} running",
        ]
        if c.pending:
            parts.append(f"{c.pending} waiting")
        if self._best is not None:
            parts.append(f"best {self.metric} {self._best.value:.4f} ({self._best.trial_id})")
        parts.append(f"elapsed {duration(self.clock() - self._start)}")
        left = self.time_left()
        if left is not None:
            parts.append(left)
        return " | ".join(parts)

    def time_left(self) -> str | None:
        """The estimate: the epochs left at the mean epoch's length, over the trials
        that ran at once; the time budget's end when that comes first.

        The epochs left count ASHA's stops as designed (search/costs.py): a new
        trial trains 2 of 6 epochs on average at grace 1 and factor 3; one that
        passed a rung more.
        """
        c = self._counts
        if c.total - c.done <= 0:
            return None
        by_budget = None
        if self.time_budget_s is not None:
            by_budget = max(0.0, self.time_budget_s - (self.clock() - self._start))
        by_epochs = None
        if self._epoch_s:
            epoch_s = sum(self._epoch_s) / len(self._epoch_s)
            rf = self.reduction_factor
            epochs = (c.not_started + c.pending) * asha_epochs(
                self.max_epochs, self.grace_period, rf
            )
            epochs += sum(
                asha_epochs(self.max_epochs, self.grace_period, rf, e) - e
                for e in self._running_epochs
            )
            by_epochs = epochs * epoch_s / max(1, self._slots)
        if by_epochs is not None and (by_budget is None or by_epochs <= by_budget):
            return f"~{duration(by_epochs)} left"
        if by_budget is not None:
            return f"~{duration(by_budget)} left (time budget)"
        return "time left: known after the first epoch"

    def _config(self, trial: Any) -> str:
        """The trial's sampled values on one line (not the ones the space fixes)."""
        params = (trial.evaluated_params or {}).items()
        return " ".join(
            f"{k.rsplit('.', 1)[-1]}={short_value(v)}" for k, v in params if k not in self.constants
        )

    def _key(self) -> tuple:
        return (self._counts, self._best.value if self._best else None)

    def _better(self, value: float, than: Best | None) -> bool:
        if than is None:
            return True
        return value > than.value if self.mode == "max" else value < than.value

    def _completed(self, trial: Any) -> bool:
        """Whether an ended trial trained every epoch (else ASHA or the budget stopped it)."""
        epoch = (trial.last_result or {}).get(EPOCH)
        return epoch is not None and epoch >= self.max_epochs

    def _out_of_time(self, trial: Any) -> bool:
        """Whether a trial ended short of max_epochs was cut by the time budget."""
        if self.stopped_by_asha is None:
            return self._budget_spent()
        return not self.stopped_by_asha(trial.trial_id)

    def _budget_spent(self) -> bool:
        budget = self.time_budget_s
        return budget is not None and self.clock() - self._start >= budget - BUDGET_SLACK_S

    def _count(self, trials: list, ended: tuple[Any, str] | None = None) -> None:
        """``ended``: a trial and the status it is about to get (callbacks run first)."""
        counts = Counts(self.num_samples)
        self._running_epochs = []
        for trial in trials:
            status = ended[1] if ended is not None and trial is ended[0] else trial.status
            if status == "TERMINATED":
                if (trial.last_result or {}).get(INFEASIBLE):
                    counts.infeasible += 1
                elif self._completed(trial):
                    counts.completed += 1
                elif self._out_of_time(trial):
                    counts.out_of_time += 1
                else:
                    counts.stopped_early += 1
            elif status == "ERROR":
                counts.errored += 1
            elif status == "RUNNING":
                counts.running += 1
                self._running_epochs.append(int((trial.last_result or {}).get(EPOCH) or 0))
            else:  # PENDING, PAUSED: waiting for resources or for their turn
                counts.pending += 1
        counts.total = max(counts.total, len(trials))
        self._slots = max(self._slots, counts.running)
        self._counts = counts

    def _summary(
        self, trials: list, ended: tuple[Any, str] | None = None, *, force: bool = False
    ) -> None:
        """The status line, printed to stay in a log file: when the counts or the
        best changed, or ``force`` (the heartbeat)."""
        self._count(trials, ended)
        line = self.status_line()
        if self.tty:
            self._draw(line)
        elif force or self._key() != self._last_summary:
            self._last_summary = self._key()
            self._write(f"{clock_time()} {line}\n")

    def _event(self, text: str) -> None:
        """A line that stays; a terminal's status line comes back at the next redraw."""
        self._write(f"{clock_time()} {text}\n")

    def _write(self, text: str) -> None:
        if self.tty and self._status_shown:
            self.stream.write(CLEAR_LINE)
            self._status_shown = False
        self.stream.write(text)
        self.stream.flush()
        self._last_print = self.clock()

    def _draw(self, line: str) -> None:
        width = shutil.get_terminal_size((120, 24)).columns
        if len(line) >= width:  # a wrapped line could not be redrawn in place
            line = line[: width - 2] + "…"
        self.stream.write(CLEAR_LINE + line)
        self.stream.flush()
        self._status_shown = True
        self._last_draw = self.clock()


def _trained(trial: Any) -> float:
    return float((trial.last_result or {}).get("time_total_s") or 0.0)
