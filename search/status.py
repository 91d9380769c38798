"""What `ftsweep status` says about a sweep: running, interrupted or finished."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from search.layout import LEADERBOARD_FILE
from search.leaderboard import build_leaderboard, open_sweep, ray_statuses
from search.storage import tune_dir

STATUSES = ("completed", "stopped_early", "running", "pending", "errored")


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
        + ", ".join(f"{counts.get(s, 0)} {s.replace('_', ' ')}" for s in STATUSES)
        + f", {not_started} not started",
    ]
    key = f"best_{metric}"
    if len(board) and key in board and pd.notna(board.iloc[0][key]):
        best = board.iloc[0]
        lines.append(
            f"best so far: trial {best['trial_id']}, {key} {best[key]:.4f} "
            f"at epoch {int(best['best_epoch'])}"
        )
    if len(board) and "error" in board:
        for row in board[board["status"] == "errored"].itertuples():
            lines.append(f"errored: trial {row.trial_id}: {row.error}")
    if len(board) and "started_at" in board:
        elapsed = board["ended_at"].max() - board["started_at"].min()
        lines.append(f"elapsed: {_duration(elapsed)} (first trial start to last report)")
    lines += _resume_lines(sweep_dir, board, not_started)
    return lines


def _resume_lines(sweep_dir: Path, board: pd.DataFrame, not_started: int) -> list[str]:
    states = sorted(tune_dir(sweep_dir).glob("experiment_state-*.json"))
    if not states:
        return ["resumable: no (no Ray Tune state yet); start it with `ftsweep run`"]
    age = time.time() - max(p.stat().st_mtime for p in states)
    statuses = ray_statuses(sweep_dir)
    unfinished = board[board["status"].isin(["running", "pending"])] if len(board) else board
    errored = int((board["status"] == "errored").sum()) if len(board) else 0
    lines = [f"Ray Tune state saved {_duration(age)} ago"]
    if not len(unfinished) and not not_started and statuses:
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
    if age < 120:
        lines.append("the sweep may still be running (its state was saved in the last 2 minutes)")
    epochs = ", ".join(
        f"{row.trial_id} from epoch {int(row.epochs) if pd.notna(row.epochs) else 0}"
        for row in unfinished.itertuples()
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


def _trials(count: int) -> str:
    return "trial" if count == 1 else "trials"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return (
        f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"
    )
