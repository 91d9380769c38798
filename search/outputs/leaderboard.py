"""The leaderboard: one row per trial, best first, read from the results folder."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pandas as pd

from search.outputs.layout import (
    COMPLETED,
    ERRORED,
    FINALISTS_FILE,
    INFEASIBLE_STATUS,
    OUT_OF_TIME,
    PENDING,
    RUNNING,
    SPACE_FILE,
    STATUSES,
    STOPPED_EARLY,
)
from search.outputs.ray_files import (
    TrialRecord,
    asha_stops,
    best_checkpoint,
    ray_trials,
    read_json,
    read_trials,
)
from search.outputs.text import spreadsheet_safe
from search.space.loader import Space, load_space
from search.space.params import walk
from trainables import hparams as hp
from trainables.errors import UserError
from trainables.limits import INFEASIBLE, Limit, broken_limit

# Columns where lower is better (the rest rank high-first).
LOWER_IS_BETTER = (
    "rank",
    "epochs",
    "train_seconds",
    "gpu_seconds",
    "params",
    "latency_ms",
    "failures",
)
FORMATS = ("table", "csv", "markdown", "json")
NODE_IP = "node_ip"  # Ray adds it to every result


def open_sweep(sweep_dir: Path) -> Space:
    """The space a results folder was run with."""
    if not (sweep_dir / SPACE_FILE).is_file():
        raise UserError(
            f"not an ftsweep results folder (no {SPACE_FILE}); give RESULTS/NAME of a sweep",
            str(sweep_dir),
        )
    return load_space(sweep_dir / SPACE_FILE)


def build_leaderboard(sweep_dir: Path, *, finished: bool = False) -> pd.DataFrame:
    """Ranks every trial of a sweep by its best epoch on the sweep's metric.

    Args:
        sweep_dir: RESULTS/NAME.
        finished: where Ray's experiment state is unreadable, take a trial
            short of max_epochs without an error as stopped early (rather
            than still running).
    """
    space = open_sweep(sweep_dir)
    metric, mode = space.trial.metric, space.trial.mode
    trials = ray_trials(sweep_dir)
    finalists = read_finalists(sweep_dir)
    stops = asha_stops(sweep_dir)
    rows = []
    for record in read_trials(sweep_dir.resolve()):
        status, failures = trials.get(record.trial_id, (None, None))
        row = _row(space, record, status, failures, finished, stops)
        tested = finalists.get(record.trial_id)
        if tested and tested.get("checkpoint") == row["checkpoint"]:
            row |= {f"test_{k}": v for k, v in tested["test"].items()}
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["rank", "trial_id", "status"])
    key = f"best_{metric}"
    if key not in frame:
        frame[key] = float("nan")
    if space.search.constraints:
        _judge(frame, space.search.constraints)
        frame["_rank"] = ~frame["feasible"]  # the feasible trials first, each group by the metric
    else:
        frame["_rank"] = False
    frame = frame.sort_values(
        ["_rank", key, "trial_id"],
        ascending=[True, mode == "min", True],
        na_position="last",
        kind="stable",
    ).drop(columns="_rank")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    for column in ("best_epoch", "epochs", "params", "failures"):
        if column in frame:  # whole numbers, blank where a trial has none yet
            frame[column] = frame[column].astype("Int64")
    return frame.reset_index(drop=True)[_column_order(space, frame)]


def _column_order(space: Space, frame: pd.DataFrame) -> list[str]:
    """rank, trial_id, status, the parameters in space order, metrics, cost, the rest."""
    params = list(dict.fromkeys(p.column for p in walk(space.params)))
    metrics = [f"{w}_{m}" for m in hp.METRICS for w in ("best", "last")]
    tests = ["test_accuracy", "test_loss", "test_f1_macro"]
    fixed = ["rank", "trial_id", "status", "feasible", *params, *metrics, *tests]
    tail = [
        "best_epoch",
        "epochs",
        "train_seconds",
        "gpu_seconds",
        "params",
        "latency_ms",
        "throughput",
        "device",
        NODE_IP,
        hp.NODE_ID,
        "failures",
        "infeasible",
        "error",
        "checkpoint",
    ]
    known = [c for c in [*fixed, *tail] if c in frame]
    return known + [c for c in frame.columns if c not in known]


def _judge(frame: pd.DataFrame, limits: tuple[Limit, ...]) -> None:
    """The ``feasible`` column, and ``infeasible`` (what broke) of every trial:
    limits on a metric are judged on the trial's best value of it."""
    if "infeasible" not in frame:
        frame["infeasible"] = None
    for index, row in frame.iterrows():
        if row["infeasible"] is None or pd.isna(row["infeasible"]):
            figures = {k.key: row.get(f"best_{k.key}", row.get(k.key)) for k in limits}
            known = {k: float(v) for k, v in figures.items() if v is not None and pd.notna(v)}
            frame.at[index, "infeasible"] = broken_limit(limits, known)
    frame["feasible"] = frame["infeasible"].isna()


def usable(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The trials that can be picked (best, finalists, ensemble): a value of the
    metric, a checkpoint, and within search.constraints where there are any."""
    keep = frame[f"best_{metric}"].notna() & frame["checkpoint"].notna()
    if "feasible" in frame:
        keep &= frame["feasible"].astype(bool)
    return frame[keep]


def best_trial(frame: pd.DataFrame, metric: str) -> pd.Series:
    found = usable(frame, metric)
    if found.empty:
        if "feasible" in frame and not frame["feasible"].any():
            raise UserError(
                "no trial of this sweep is within search.constraints (see the leaderboard's "
                "infeasible column); nothing to export. Loosen a limit or widen the space"
            )
        raise UserError(
            "no trial of this sweep finished an epoch with a checkpoint; nothing to export"
        )
    return found.iloc[0]


def read_finalists(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """trial id -> {"checkpoint", "epoch", "test": {...}} of the trials tested at the end."""
    data = read_json(sweep_dir / FINALISTS_FILE)
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}


def pareto_mask(frame: pd.DataFrame, metric: str, mode: str, cost: str = "latency_ms") -> pd.Series:
    """True for the trials no other trial beats on both the metric and the cost.

    A trial is on the front when every trial that is at least as cheap is
    worse on ``best_<metric>`` (ties on both keep the first). Trials missing
    either value are off the front.
    """
    key = f"best_{metric}"
    mask = pd.Series(False, index=frame.index)
    if key not in frame or cost not in frame:
        return mask
    usable = frame[frame[key].notna() & frame[cost].notna()]
    if "feasible" in usable:  # search.constraints: the front of the models that may ship
        usable = usable[usable["feasible"].astype(bool)]
    sign = 1.0 if mode == "max" else -1.0
    # Cheapest first; among equal cost the best first. Walk and keep each
    # trial that beats every cheaper one.
    ordered = usable.assign(_score=sign * usable[key]).sort_values(
        [cost, "_score"], ascending=[True, False], kind="stable"
    )
    best_so_far = float("-inf")
    for index, score in ordered["_score"].items():
        if score > best_so_far:
            mask[index] = True
            best_so_far = score
    return mask


def render(frame: pd.DataFrame, fmt: str) -> str:
    """The leaderboard as text: an aligned table, CSV, Markdown or JSON."""
    if fmt == "csv":
        return spreadsheet_safe(frame).to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2, double_precision=15)
    shown = frame.drop(columns=["checkpoint", "started_at", "ended_at"], errors="ignore")
    if hp.NODE_ID in shown:  # 56 hex digits; the first 12 tell nodes apart, as `ray status`
        shown[hp.NODE_ID] = shown[hp.NODE_ID].str[:12]
    shown = shown.astype(object).where(shown.notna(), "")
    shown = shown.map(lambda v: f"{v:.4g}" if isinstance(v, float) else v)
    if fmt == "markdown":
        header = "| " + " | ".join(shown.columns) + " |"
        rule = "|" + "|".join("---" for _ in shown.columns) + "|"
        body = [
            "| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)
        ]
        return "\n".join([header, rule, *body])
    return shown.to_string(index=False)


def _row(
    space: Space,
    record: TrialRecord,
    ray_status: str | None,
    failures: int | None,
    finished: bool,
    stops: dict[str, int] | None,
) -> dict[str, Any]:
    metric, mode = space.trial.metric, space.trial.mode
    row: dict[str, Any] = {"trial_id": record.trial_id}
    stopped = [r for r in record.results if INFEASIBLE in r]
    results = [r for r in record.results if metric in r and INFEASIBLE not in r]
    row["status"] = _status(space, record, results, ray_status, finished, stops)
    if stopped and not results and row["status"] != ERRORED:  # search.constraints
        row["status"], row["infeasible"], row["epochs"] = (
            INFEASIBLE_STATUS,
            stopped[-1][INFEASIBLE],
            0,
        )
        for name in (hp.PARAMS, hp.LATENCY_MS, hp.THROUGHPUT, hp.DEVICE, hp.STARTED_AT):
            row[name] = stopped[-1].get(name)
    with contextlib.suppress(KeyError, ValueError):  # a trial whose config is not on disk yet
        row |= space.resolve(record.config)
    if results:
        history = pd.DataFrame(results)
        best_index = history[metric].idxmax() if mode == "max" else history[metric].idxmin()
        for name, direction in hp.METRICS.items():
            if name in history:
                values = history[name]
                row[f"best_{name}"] = values.max() if direction == "max" else values.min()
                row[f"last_{name}"] = values.iloc[-1]
        row["best_epoch"] = int(history.loc[best_index, hp.EPOCH])
        row["epochs"] = int(history[hp.EPOCH].iloc[-1])
        row["train_seconds"] = round(float(history[hp.TRAIN_SECONDS].iloc[-1]), 2)
        row["gpu_seconds"] = round(row["train_seconds"] * space.resources.gpus, 2)
        row["params"] = int(history[hp.PARAMS].iloc[-1])
        for name in (hp.LATENCY_MS, hp.THROUGHPUT, hp.DEVICE, NODE_IP, hp.NODE_ID):
            if name in history and history[name].notna().any():
                value = history[name].dropna().iloc[-1]
                row[name] = str(value) if isinstance(value, str) else round(float(value), 3)
        row["started_at"] = float(history[hp.STARTED_AT].iloc[0])
        row["ended_at"] = float(history["timestamp"].iloc[-1]) if "timestamp" in history else None
    # Up to trial.max_failures of them, Ray restarts the trial from its last checkpoint.
    row["failures"] = failures if failures is not None else record.failures
    row["error"] = record.error if row["status"] == ERRORED else None
    row["checkpoint"] = best_checkpoint(record.path, metric, mode)
    return row


def _status(
    space: Space,
    record: TrialRecord,
    results: list[dict],
    ray_status: str | None,
    finished: bool,
    stops: dict[str, int] | None,
) -> str:
    if ray_status == "ERROR":
        return ERRORED
    if results and results[-1].get(hp.EPOCH, 0) >= space.trial.max_epochs:
        return COMPLETED  # perhaps after failures it was retried from
    if ray_status is None and record.error and finished:
        return ERRORED
    if ray_status == "TERMINATED":  # ended short of max_epochs: ASHA or the time budget
        return _ended_short(space, record.trial_id, stops)
    if ray_status in ("RUNNING", "PAUSED"):
        return RUNNING
    if ray_status == "PENDING":
        return PENDING
    if finished:
        return STOPPED_EARLY if results else "errored"
    return RUNNING if results else "pending"


def _ended_short(space: Space, trial_id: str, stops: dict[str, int] | None) -> str:
    """Why a trial Ray ended short of max_epochs ended: ASHA stopped it, or the
    time budget ran out (Ray then stops every running trial and starts none)."""
    if space.search.scheduler.type == "none":
        return OUT_OF_TIME  # nothing else ends a trial short
    if stops is None:
        return STOPPED_EARLY  # a sweep from before ASHA's stops were recorded
    return STOPPED_EARLY if trial_id in stops else OUT_OF_TIME


def select(
    frame: pd.DataFrame,
    space: Space,
    *,
    statuses: list[str] | None = None,
    pareto: bool = False,
    sort: str | None = None,
) -> pd.DataFrame:
    """The rows of a leaderboard with these statuses, on the metric/latency Pareto
    front, sorted by another column (each optional; ``ftsweep leaderboard``'s flags).

    Raises:
        UserError: an unknown status or column, or no latency to draw a front from.
    """
    if statuses:
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise UserError(
                f"--status {','.join(unknown)}: not a trial status; use one or more of "
                f"{', '.join(STATUSES)}, comma-separated"
            )
        frame = frame[frame["status"].isin(statuses)]
    if pareto:
        if "latency_ms" not in frame:
            raise UserError(
                "--pareto needs the latency_ms column, which trials report from their first "
                "epoch on; none has yet"
            )
        frame = frame[pareto_mask(frame, space.trial.metric, space.trial.mode)]
    if sort:
        if sort not in frame:
            raise UserError(f"--sort {sort}: no such column; columns: {', '.join(frame.columns)}")
        ascending = sort.endswith("_loss") or sort in LOWER_IS_BETTER
        frame = frame.sort_values(sort, ascending=ascending, na_position="last")
    return frame
