"""``search.warm_start: RESULTS/OLD``: an earlier sweep's trials seed the new study.

Each trial of the earlier leaderboard.csv whose configuration lies in the new
space becomes an Optuna trial of the new study (``add_trial``) before
anything is sampled, with its value and state: completed ones COMPLETE with
their last value of the metric (what Optuna was told then), ones stopped
early (or cut by the time budget) PRUNED at their last epoch, ones a limit
stopped PRUNED and infeasible. TPE's start-up trials are then already
satisfied, so the first new trials are proposed from what the earlier sweep
learnt. Ray's ``evaluated_rewards`` cannot do this with a define-by-run space.

Only leaderboard.csv, space.yaml and split.csv are read (never Ray's
pickles). The earlier sweep must have optimised the same metric, and split
its data the same way unless ``warm_start_split: any``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from search.outputs.layout import LEADERBOARD_FILE, SPACE_FILE, SPLIT_FILE
from search.space.loader import Space
from search.space.params import Param
from trainables.errors import UserError
from trainables.hparams import HPARAMS
from trainables.limits import MEASURED

#: Leaderboard statuses that carry what a trial learnt; the rest are skipped.
BROUGHT = {"completed": "COMPLETE", "stopped_early": "PRUNED", "out_of_time": "PRUNED",
           "infeasible": "PRUNED"}  # fmt: skip


@dataclass
class WarmStart:
    """The earlier trials in the searcher's saved form (engine/history.py), and
    what was left out: reason -> count."""

    source: Path
    trials: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """The progress view's first line."""
        left = sum(self.skipped.values())
        why = "; ".join(f"{count} {reason}" for reason, count in self.skipped.items())
        return (
            f"warm start from {self.source}: {len(self.trials)} earlier trials brought in, "
            f"{left} skipped" + (f" ({why})" if why else "")
        )


def warm_start(space: Space, sweep_dir: Path) -> WarmStart | None:
    """The trials of ``space.search.warm_start`` for the sweep in ``sweep_dir``
    (whose split.csv is written); None when the space asks for none.

    Raises:
        UserError: the earlier sweep is not there, optimised another metric, or
            split its data otherwise (without ``warm_start_split: any``).
    """
    if not space.search.warm_start:
        return None
    old = Path(space.search.warm_start).expanduser()
    board_file = old / LEADERBOARD_FILE
    if not board_file.is_file() or not (old / SPACE_FILE).is_file():
        raise UserError(
            f"search.warm_start: {old} is not a finished ftsweep sweep (it needs "
            f"{LEADERBOARD_FILE} and {SPACE_FILE}); give RESULTS/NAME of an earlier sweep",
            str(old),
        )
    _check_same(space, sweep_dir, old)
    board = pd.read_csv(board_file)
    found = WarmStart(old)
    for row in board.to_dict("records"):
        trial, reason = _trial(space, row)
        if trial is None:
            found.skipped[reason] = found.skipped.get(reason, 0) + 1
        else:
            trial["number"] = len(found.trials)
            found.trials.append(trial)
    return found


def _check_same(space: Space, sweep_dir: Path, old: Path) -> None:
    saved = yaml.safe_load((old / SPACE_FILE).read_text()) or {}
    metric = (saved.get("trial") or {}).get("metric", "val_accuracy")
    if metric != space.trial.metric:
        raise UserError(
            f"search.warm_start: {old / SPACE_FILE} optimised {metric}, this sweep "
            f"{space.trial.metric}; their values cannot seed one study. Warm-start from a "
            f"sweep of {space.trial.metric}, or set trial.metric: {metric}",
            str(old / SPACE_FILE),
        )
    if space.search.warm_start_split == "any":
        return
    ours, theirs = sweep_dir / SPLIT_FILE, old / SPLIT_FILE
    if not theirs.is_file() or not _rows(theirs).equals(_rows(ours)):
        raise UserError(
            f"search.warm_start: {theirs} differs from {ours} (other images, labels or "
            "splits), so the earlier scores were measured on other validation images. Give "
            "this sweep the same data and data.seed, or set search.warm_start_split: any to "
            "take them anyway",
            str(theirs),
        )


def _rows(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def _trial(space: Space, row: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """One leaderboard row as a saved Optuna trial, or None and why not."""
    state = BROUGHT.get(str(row.get("status")))
    if state is None:
        return None, f"{row.get('status')} (nothing learnt)"
    params: dict[str, Any] = {}
    distributions: dict[str, BaseDistribution] = {}
    if _point(space.params, row, params, distributions) is not None:
        return None, "outside the new space"
    metric = space.trial.metric
    value, epochs = row.get(f"last_{metric}"), row.get("epochs")
    attrs: dict[str, Any] = {}
    for limit in space.search.constraints:
        figure = row.get(f"best_{limit.key}") if limit.key not in MEASURED else row.get(limit.key)
        if figure is not None and not pd.isna(figure):
            attrs[f"constraints:{limit.key}"] = limit.violation(float(figure))
    if row.get("status") == "infeasible":
        if not any(v > 0 for v in attrs.values()):
            return None, "infeasible before, within the new limits (never trained)"
        value = None
    elif value is None or pd.isna(value):
        return None, "no value of the metric"
    intermediate = {}
    if state == "PRUNED" and value is not None and epochs is not None and not pd.isna(epochs):
        intermediate = {str(int(epochs)): float(value)}
    return {
        "ray_trial_id": None,
        "state": state,
        "value": None if state == "PRUNED" or value is None else float(value),
        "params": params,
        "distributions": {k: _json(d) for k, d in distributions.items()},
        "intermediate_values": intermediate,
        "user_attrs": {"warm_start_trial": str(row.get("trial_id"))},
        "system_attrs": attrs,
    }, ""


def _json(distribution: BaseDistribution) -> dict[str, Any]:
    return json.loads(distribution_to_json(distribution))


def _point(
    params: tuple[Param, ...],
    row: dict[str, Any],
    out: dict[str, Any],
    distributions: dict[str, BaseDistribution],
) -> str | None:
    """Fills ``out`` with the row's value of each active parameter, as
    search/engine/searcher.py samples them; the first one outside, named."""
    for param in params:
        raw = row.get(param.column)
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            if param.kind == "const" and _same(HPARAMS[param.name].default, param.values[0]):
                continue  # an earlier space without it ran the default
            return f"{param.column} missing"
        if param.kind in ("const", "choice"):
            value = next((c for c in param.values if _same(raw, c)), _MISSING)
            if value is _MISSING:
                return f"{param.column} {raw!r}"
            if param.kind == "choice":
                out[param.key] = value
                distributions[param.key] = CategoricalDistribution(list(param.values))
                if param.branches:
                    branch = param.branches[param.values.index(value)]
                    problem = _point(branch, row, out, distributions)
                    if problem:
                        return problem
            continue
        try:
            number = float(raw)
        except (TypeError, ValueError):
            return f"{param.column} {raw!r} not a number"
        if not param.low <= number <= param.high:
            return f"{param.column} {number:g} outside [{param.low:g}, {param.high:g}]"
        if param.kind == "int":
            step = int(param.step or 1)
            if not number.is_integer() or (number - param.low) % step:
                return f"{param.column} {number:g} not on the grid"
            out[param.key] = int(number)
            distributions[param.key] = IntDistribution(
                int(param.low), int(param.high), step=step, log=param.log
            )
        else:
            out[param.key] = number
            distributions[param.key] = FloatDistribution(
                param.low, param.high, step=param.step, log=param.log
            )
    return None


_MISSING = object()


def _same(raw: Any, choice: Any) -> bool:
    """A leaderboard cell (read back from CSV) equals a value of the space."""
    if isinstance(choice, bool) or isinstance(raw, bool):
        return str(raw).lower() == str(choice).lower()
    if isinstance(choice, int | float) and not isinstance(raw, str):
        try:
            return float(raw) == float(choice)
        except (TypeError, ValueError):
            return False
    return str(raw) == str(choice)
