"""What `ftsweep status` says about a sweep: running, interrupted or finished."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import pandas as pd

from search.outputs.layout import (
    BEST_DIR,
    INFEASIBLE_STATUS,
    LEADERBOARD_FILE,
    MODEL_FILE,
    OUT_OF_TIME,
    SPLIT_FILE,
    STATUSES,
)
from search.outputs.leaderboard import build_leaderboard, open_sweep, read_finalists
from search.outputs.lock import driver_of
from search.outputs.ray_files import ray_statuses, read_json
from search.outputs.storage import tune_dir
from search.outputs.text import clock_time, duration, short_value
from search.space.loader import Space
from search.space.params import walk
from trainables.data import read_split

CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, clear: a terminal shows one view at a time


def describe_status(sweep_dir: Path) -> list[str]:
    """Counts by status, best so far, elapsed time, and what `resume` would do."""
    space = open_sweep(sweep_dir)
    metric = space.trial.metric
    finished = (sweep_dir / LEADERBOARD_FILE).is_file()
    board = build_leaderboard(sweep_dir, finished=finished)
    counts = board["status"].value_counts().to_dict() if len(board) else {}
    not_started = max(0, space.search.num_samples - len(board))
    lines = [
        f"sweep: {sweep_dir} ({space.search.num_samples} trials planned)",
        "trials: "
        + ", ".join(
            f"{counts.get(s, 0)} {s.replace('_', ' ')}"
            for s in STATUSES
            # out of time and infeasible only where a time budget or a limit stopped trials
            if s not in (OUT_OF_TIME, INFEASIBLE_STATUS) or counts.get(s)
        )
        + f", {not_started} not started",
    ]
    key = f"best_{metric}"
    if len(board) and key in board and pd.notna(board.iloc[0][key]):
        best = board.iloc[0]
        lines.append(
            f"best so far: trial {best['trial_id']}, {key} {best[key]:.4f} "
            f"at epoch {int(best['best_epoch'])}"
        )
        columns = dict.fromkeys(p.column for p in walk(space.params))
        config = [
            f"{c}={short_value(best[c])}" for c in columns if c in board and pd.notna(best[c])
        ]
        lines.append(f"  its configuration: {' '.join(config)}")
    if len(board):
        for row in board[board["status"] == "running"].itertuples():
            epochs = _epochs(row)
            value = getattr(row, key, None)
            score = f", {key} {value:.4f}" if value is not None and pd.notna(value) else ""
            lines.append(
                f"running: trial {row.trial_id}, epoch {epochs} of {space.trial.max_epochs}{score}"
            )
    if len(board) and "error" in board:
        for row in board[board["status"] == "errored"].itertuples():
            lines.append(f"errored: trial {row.trial_id}: {row.error}")
    if len(board) and "started_at" in board:
        elapsed = board["ended_at"].max() - board["started_at"].min()
        lines.append(f"elapsed: {duration(elapsed)} (first trial start to last report)")
    lines += _resume_lines(sweep_dir, board, not_started, space)
    return lines


def _end_missing(sweep_dir: Path, board: pd.DataFrame, space: Space) -> list[str]:
    """What the sweep's end (finish_sweep) has yet to write, once every trial ended:
    a driver killed during it leaves finalists untested or best/ not the best."""
    key = f"best_{space.trial.metric}"
    if not len(board) or key not in board:
        return []
    usable = board[board[key].notna() & board["checkpoint"].notna()]
    if usable.empty:
        return []
    missing = []
    if space.search.finalists and "test" in set(read_split(sweep_dir / SPLIT_FILE)["split"]):
        known = read_finalists(sweep_dir)
        top = usable.head(space.search.finalists)
        untested = [t for t, c in zip(top["trial_id"], top["checkpoint"], strict=True)
                    if known.get(str(t), {}).get("checkpoint") != str(c)]  # fmt: skip
        if untested:
            missing.append(f"test {len(untested)} finalists")
    exported = read_json(sweep_dir / BEST_DIR / MODEL_FILE)
    best = str(usable.iloc[0]["trial_id"])
    if not isinstance(exported, dict) or str(exported.get("trial_id")) != best:
        missing.append(f"export trial {best} to {BEST_DIR}/")
    return missing


def _resume_lines(
    sweep_dir: Path, board: pd.DataFrame, not_started: int, space: Space
) -> list[str]:
    driver = driver_of(sweep_dir)  # the folder's lock (lock.py)
    if driver is not None:
        return [f"running now: {driver}", "resumable: not while that driver runs the sweep"]
    states = sorted(tune_dir(sweep_dir).glob("experiment_state-*.json"))
    if not states:
        return ["resumable: no (no Ray Tune state yet); start it with `ftsweep run`"]
    age = time.time() - max(p.stat().st_mtime for p in states)
    statuses = ray_statuses(sweep_dir)
    unfinished = board[board["status"].isin(["running", "pending"])] if len(board) else board
    errored = int((board["status"] == "errored").sum()) if len(board) else 0
    lines = [f"Ray Tune state saved {duration(age)} ago"]
    if not len(unfinished) and not not_started and statuses:
        if end_missing := _end_missing(sweep_dir, board, space):
            lines.append(
                "every trial ended, but not the sweep's end (its driver stopped during it): "
                f"resumable: yes; `ftsweep resume {sweep_dir}` would " + " and ".join(end_missing)
            )
            return lines
        lines.append(
            "resumable: no, the sweep has finished; "
            f"`ftsweep resume {sweep_dir} --add N` runs N more trials"
        )
        if errored:
            lines.append(
                f"`ftsweep resume {sweep_dir} --retry-errored` would re-run {errored} "
                f"errored {_trials(errored)} from {'its' if errored == 1 else 'their'} "
                "last checkpoint"
            )
        return lines
    epochs = ", ".join(
        f"{row.trial_id} from epoch {_epochs(row)}" for row in unfinished.itertuples()
    )
    plan = []
    if len(unfinished):
        plan.append(f"continue {len(unfinished)} unfinished trials ({epochs})")
    if not_started:
        plan.append(f"start {not_started} new trials")
    if errored:
        plan.append(f"keep {errored} errored {_trials(errored)} (--retry-errored re-runs them)")
    lines.append(f"resumable: yes; `ftsweep resume {sweep_dir}` would " + "; ".join(plan))
    return lines


def watch(
    location: str,
    *,
    interval: float = 10.0,
    out: TextIO | None = None,
    refreshes: int | None = None,
    resolve: Callable[[str], Path] = Path,
) -> None:
    """`ftsweep status --watch`: the status again every ``interval`` seconds until
    the sweep has finished (or Ctrl-C, or ``refreshes`` views).

    On a terminal each view replaces the last; in a pipe or a log file the
    views follow each other under a timestamp line, with no control
    characters. ``resolve`` turns the location into RESULTS/NAME again for
    each view (a sweep on object storage is copied down each time).
    """
    out = out or sys.stdout
    tty = out.isatty()
    shown = 0
    while True:
        sweep_dir = resolve(location)
        lines = describe_status(sweep_dir)
        finished = sweep_finished(sweep_dir)
        stamp = clock_time()
        if tty:
            out.write(CLEAR_SCREEN)
            note = "the sweep has finished" if finished else "Ctrl-C stops watching"
            lines = [f"{stamp}  every {interval:g} s ({note})", *lines]
        else:
            lines = [f"--- {stamp} ---", *lines]
        out.write("\n".join(lines) + "\n")
        out.flush()
        shown += 1
        if finished or (refreshes is not None and shown >= refreshes):
            return
        time.sleep(interval)


def sweep_finished(sweep_dir: Path) -> bool:
    """Whether Ray's saved state has every planned trial started and ended."""
    statuses = ray_statuses(sweep_dir)
    planned = open_sweep(sweep_dir).search.num_samples
    return len(statuses) >= planned and all(s in ("TERMINATED", "ERROR") for s in statuses.values())


def _epochs(row: object) -> int:
    """A leaderboard row's epochs; 0 before any trial reported (no such column yet)."""
    epochs = getattr(row, "epochs", None)
    return int(epochs) if epochs is not None and pd.notna(epochs) else 0


def _trials(count: int) -> str:
    return "trial" if count == 1 else "trials"
