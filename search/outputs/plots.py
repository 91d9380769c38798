"""The sweep's plots (RESULTS/NAME/plots/*.png).

Long: the five plots share their helpers, styles and error handling; one
screen each.

Each plot is drawn from the results folder alone (the leaderboard and the
trials' result.json files), so `ftsweep plot` redraws them at any time, also
while the sweep runs. A plot without enough data to show says so in its frame
rather than being left out.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

from search.outputs.layout import (
    COMPLETED,
    ERRORED,
    OUT_OF_TIME,
    PENDING,
    PLOTS_DIR,
    RUNNING,
    STATUSES,
    STOPPED_EARLY,
)

matplotlib.use("Agg")  # files only; never a window (import before pyplot)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from search.outputs.leaderboard import pareto_mask, read_trials  # noqa: E402
from search.space.loader import Space  # noqa: E402
from search.space.params import Param, walk  # noqa: E402
from trainables import hparams as hp  # noqa: E402

log = logging.getLogger(__name__)

UNUSED = -0.12  # where parallel coordinates put a parameter a trial's options did not use
SIZE = (9.0, 5.5)  # inches; at DPI, 1080 x 660 pixels
DPI = 120
PLOTS = (
    "optimization_history",
    "parallel_coordinates",
    "param_importance",
    "learning_curves",
    "accuracy_latency",
)
# status -> colour, line style, marker at a curve's last epoch
STATUS_STYLE: dict[str, tuple[str, Any, str]] = {
    COMPLETED: ("#1b7837", "-", "o"),
    STOPPED_EARLY: ("#e08214", "--", "x"),
    OUT_OF_TIME: ("#762a83", "--", "s"),
    ERRORED: ("#c51b1b", ":", "v"),
    RUNNING: ("#2166ac", "-", ">"),
    PENDING: ("#888888", ":", "."),
}
STATUS_LABEL = {s: s.replace("_", " ") for s in STATUSES} | {STOPPED_EARLY: "stopped early (ASHA)"}


#: What the importance plot draws: (importance by column, trials used) for a
#: leaderboard; ValueError says why there is none. engine/importance.py has it.
Importance = Callable[[pd.DataFrame, Space], tuple[dict[str, float], int]]


def plot_sweep(
    sweep_dir: Path, frame: pd.DataFrame, space: Space, importance: Importance | None = None
) -> list[Path]:
    """Writes every plot of the sweep to RESULTS/NAME/plots/; returns their paths.

    ``importance`` computes the parameter importance plot's values (left
    blank without it).
    """
    out = sweep_dir / PLOTS_DIR
    out.mkdir(exist_ok=True)
    curves = {r.trial_id: r.results for r in read_trials(sweep_dir)}
    drawers = {
        "optimization_history": lambda: _history(frame, space),
        "parallel_coordinates": lambda: _parallel(frame, space),
        "param_importance": lambda: _importance(frame, space, importance),
        "learning_curves": lambda: _curves(frame, space, curves),
        "accuracy_latency": lambda: _latency(frame, space),
    }
    paths = []
    for name in PLOTS:
        try:
            figure = drawers[name]()
        except Exception as exc:  # one plot's bug never costs the others
            log.exception("plot %s failed", name)
            figure, axes = _figure(f"{name.replace('_', ' ')} ({space.name})")
            figure = _empty(figure, axes, f"could not be drawn: {type(exc).__name__}: {exc}")
        path = out / f"{name}.png"
        save_figure(figure, path)
        paths.append(path)
    return paths


# --- the five sweep plots ----------------------------------------------------------------


def _history(frame: pd.DataFrame, space: Space) -> Figure:
    metric, mode = space.trial.metric, space.trial.mode
    figure, axes = _figure(f"Optimization history: {metric}, best so far ({space.name})")
    key = f"best_{metric}"
    done = with_columns(frame, key, "ended_at", "started_at")
    if done.empty:
        return _empty(figure, axes, "no trial has reported an epoch yet")
    t0 = frame["started_at"].min()
    elapsed, unit = _time_axis(done["ended_at"] - t0)
    for status, group in done.assign(_t=elapsed).groupby("status"):
        colour, _, marker = STATUS_STYLE.get(str(status), STATUS_STYLE[PENDING])
        axes.scatter(
            group["_t"], group[key], color=colour, marker=marker, s=36, zorder=3,
            label=STATUS_LABEL.get(str(status), str(status)),
        )  # fmt: skip
    order = np.argsort(elapsed.to_numpy())
    times = elapsed.to_numpy()[order]
    values = done[key].to_numpy()[order]
    best = np.maximum.accumulate(values) if mode == "max" else np.minimum.accumulate(values)
    axes.step(times, best, where="post", color="black", linewidth=2, label="best so far")
    axes.set_xlabel(f"time since the sweep started ({unit}); a trial is placed at its last epoch")
    axes.set_ylabel(f"{metric} (best epoch of each trial)")
    axes.legend(loc="best", fontsize=8, title="each trial's best epoch", title_fontsize=8)
    return figure


def _parallel(frame: pd.DataFrame, space: Space) -> Figure:
    metric = space.trial.metric
    key = f"best_{metric}"
    figure, axes = _figure(f"Parallel coordinates: parameters against {metric} ({space.name})")
    params = searched_params(space, frame)
    done = with_columns(frame, key)
    if done.empty or not params:
        reason = "no searched parameters" if not params else "no trial has reported an epoch yet"
        return _empty(figure, axes, reason)
    columns = [p.column for p in params] + [key]
    scaled = np.full((len(done), len(columns)), np.nan)
    label = {"fontsize": 7, "va": "center", "ha": "left", "color": "#222"}
    label["bbox"] = {"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5}
    for j, param in enumerate(params):
        scaled[:, j], ticks = _scale(done[param.column], param)
        if np.isnan(scaled[:, j]).any():  # a conditional parameter its option did not use
            scaled[np.isnan(scaled[:, j]), j] = UNUSED
            ticks.append((UNUSED, "(not used)"))
        for position, text in ticks:
            axes.text(j + 0.03, position, _wrap(text), **label)
    values = done[key].astype(float)
    low, high = float(values.min()), float(values.max())
    scaled[:, -1] = (values - low) / (high - low) if high > low else 0.5
    for position, value in ((0.0, low), (1.0, high)):
        axes.text(len(columns) - 1 + 0.03, position, f"{value:.4g}", **label)
    colours = plt.get_cmap("viridis" if space.trial.mode == "max" else "viridis_r")
    spread = (high - low) or max(abs(high) * 1e-3, 1e-6)  # all equal: one colour, a sane bar
    norm = matplotlib.colors.Normalize(low if high > low else low - spread, low + spread)
    for i in np.argsort(values.to_numpy() * (1 if space.trial.mode == "max" else -1)):
        axes.plot(range(len(columns)), scaled[i], color=colours(norm(values.iloc[i])), alpha=0.8)
    for j in range(len(columns)):
        axes.axvline(j, color="#999", linewidth=0.8)
    axes.set_xticks(range(len(columns)), columns, rotation=20, ha="right")
    axes.set_yticks([])
    axes.set_xlim(-0.2, len(columns) - 0.4)
    axes.set_ylim(UNUSED - 0.06, 1.06)
    axes.set_ylabel("each axis scaled to its range (log where the space is log)")
    bar = figure.colorbar(
        matplotlib.cm.ScalarMappable(norm=norm, cmap=colours), ax=axes, label=f"best {metric}"
    )
    bar.formatter = matplotlib.ticker.ScalarFormatter(useOffset=False)
    bar.update_ticks()
    return figure


def _importance(frame: pd.DataFrame, space: Space, importance: Importance | None) -> Figure:
    metric = space.trial.metric
    figure, axes = _figure(f"Parameter importance for {metric} (Optuna fANOVA, {space.name})")
    if importance is None:
        return _empty(figure, axes, "not computed")
    try:
        importances, used = importance(frame, space)
    except ValueError as exc:
        return _empty(figure, axes, str(exc))
    names = list(importances)[::-1]
    axes.barh(names, [importances[n] for n in names], color="#4c72b0")
    for y, name in enumerate(names):
        axes.text(importances[name], y, f" {importances[name]:.2f}", va="center", fontsize=8)
    axes.set_xlabel(f"share of the variance of best {metric} explained (sums to 1)")
    axes.set_xlim(0, max(importances.values()) * 1.15 or 1)
    axes.set_title(
        f"{axes.get_title()}\n{used} trials with a result; early-stopped ones at their best epoch",
        fontsize=10,
    )
    return figure


def _curves(frame: pd.DataFrame, space: Space, curves: dict[str, list[dict[str, Any]]]) -> Figure:
    metric = space.trial.metric
    figure, axes = _figure(f"Learning curves: {metric} per epoch, every trial ({space.name})")
    statuses = dict(zip(frame["trial_id"].astype(str), frame["status"], strict=True))
    drawn = 0
    counts: dict[str, int] = {}
    for trial_id, results in curves.items():
        status = str(statuses.get(trial_id, "running"))
        counts[status] = counts.get(status, 0) + 1
        points = [(r[hp.EPOCH], r[metric]) for r in results if metric in r and hp.EPOCH in r]
        if not points:
            continue
        epochs, values = zip(*points, strict=True)
        colour, style, marker = STATUS_STYLE.get(status, STATUS_STYLE[PENDING])
        axes.plot(epochs, values, color=colour, linestyle=style, alpha=0.75, linewidth=1.3)
        axes.plot(epochs[-1], values[-1], color=colour, marker=marker, markersize=7)
        drawn += 1
    if not drawn:
        return _empty(figure, axes, "no trial has reported an epoch yet")
    if space.search.scheduler.type == "asha":
        rung = float(space.search.scheduler.grace_period)
        while rung < space.trial.max_epochs:
            axes.axvline(rung, color="#bbb", linestyle=":", linewidth=1)
            rung *= space.search.scheduler.reduction_factor
    best = frame.iloc[0]
    if str(best["trial_id"]) in curves and pd.notna(best.get(f"best_{metric}")):
        points = [(r[hp.EPOCH], r[metric]) for r in curves[str(best["trial_id"])] if metric in r]
        if points:
            epochs, values = zip(*points, strict=True)
            axes.plot(epochs, values, color="black", linewidth=2.5, zorder=4)
    handles = [
        Line2D([], [], color=STATUS_STYLE[s][0], linestyle=STATUS_STYLE[s][1],
               marker=STATUS_STYLE[s][2], label=f"{STATUS_LABEL[s]} ({counts[s]})")
        for s in STATUS_STYLE
        if counts.get(s)
    ]  # fmt: skip
    handles.append(Line2D([], [], color="black", linewidth=2.5, label="best trial"))
    if space.search.scheduler.type == "asha":
        handles.append(Line2D([], [], color="#bbb", linestyle=":", label="ASHA rung"))
    axes.legend(handles=handles, fontsize=8, loc="best")
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return figure


def _latency(frame: pd.DataFrame, space: Space) -> Figure:
    metric, mode = space.trial.metric, space.trial.mode
    key = f"best_{metric}"
    figure, axes = _figure(f"{metric} against inference latency; Pareto front ({space.name})")
    done = with_columns(frame, key, "latency_ms")
    if done.empty:
        return _empty(figure, axes, "no trial has reported its latency yet")
    backbones = sorted(done["backbone"].astype(str).unique()) if "backbone" in done else ["?"]
    palette = plt.get_cmap("tab10")
    for i, backbone in enumerate(backbones):
        group = done[done["backbone"].astype(str) == backbone] if "backbone" in done else done
        axes.scatter(
            group["latency_ms"], group[key], color=palette(i % 10), s=40, alpha=0.8,
            label=backbone, zorder=3,
        )  # fmt: skip
    front = done[pareto_mask(done, metric, mode)].sort_values("latency_ms")
    axes.step(
        front["latency_ms"], front[key], where="post", color="black", linewidth=1.5,
        label="Pareto front", zorder=2,
    )  # fmt: skip
    for row in front.itertuples():  # by rank: short labels that rarely collide
        axes.annotate(
            f"#{row.rank}", (row.latency_ms, getattr(row, key)), fontsize=8,
            xytext=(-5, 4), textcoords="offset points", ha="right",
        )  # fmt: skip
    spread = done["latency_ms"].max() / max(done["latency_ms"].min(), 1e-9)
    if spread > 10:
        axes.set_xscale("log")
    device = (
        done["device"].dropna().iloc[0]
        if "device" in done and done["device"].notna().any()
        else "?"
    )
    axes.set_xlabel(
        f"inference latency, batch 1 (ms per image, on {device}; timed inside each trial, "
        "beside the trials sharing its device)"
    )
    axes.set_title(f"{axes.get_title()}\nfront labelled by leaderboard rank", fontsize=10)
    axes.set_ylabel(f"best {metric}")
    axes.legend(fontsize=8, loc="best")
    return figure


# --- parameter importance, from a study rebuilt from the results -------------------------


# --- helpers -----------------------------------------------------------------------------


def searched_params(space: Space, frame: pd.DataFrame) -> list[Param]:
    """The parameters that were searched (not constants), once per leaderboard column."""
    seen: dict[str, Param] = {}
    for param in walk(space.params):
        if param.kind != "const" and param.column in frame and param.column not in seen:
            seen[param.column] = param
    return list(seen.values())


def _scale(values: pd.Series, param: Param) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Values mapped to [0, 1] for one parallel-coordinates axis, and its tick labels."""
    if param.kind == "choice":
        options = [str(v) for v in param.values]
        spots = np.linspace(0, 1, len(options)) if len(options) > 1 else np.array([0.5])
        index = {o: spots[i] for i, o in enumerate(options)}
        mapped = np.array([index.get(_text(v), np.nan) for v in values])
        return mapped, [(float(spots[i]), o) for i, o in enumerate(options)]
    log = param.log or param.kind == "loguniform"
    low, high = float(param.low), float(param.high)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if log:
        numbers, lo, hi = np.log10(numbers), math.log10(low), math.log10(high)
    else:
        lo, hi = low, high
    mapped = (numbers - lo) / (hi - lo) if hi > lo else np.full(len(numbers), 0.5)
    return mapped, [(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")]


def _wrap(text: str, width: int = 10) -> str:
    """A long option name over lines, broken after underscores (mobilenet_ / v3_small)."""
    lines, line = [], ""
    for part in text.replace("_", "_\0").split("\0"):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "\n".join([*lines, line])


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def with_columns(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """The rows where every one of ``columns`` has a value."""
    if any(c not in frame for c in columns):
        return frame.iloc[0:0]
    return frame[frame[list(columns)].notna().all(axis=1)]


def _time_axis(seconds: pd.Series) -> tuple[pd.Series, str]:
    span = float(seconds.max()) if len(seconds) else 0.0
    if span > 3 * 3600:
        return seconds / 3600, "h"
    if span > 180:
        return seconds / 60, "min"
    return seconds, "s"


def _figure(title: str) -> tuple[Figure, Any]:
    figure, axes = plt.subplots(figsize=SIZE, dpi=DPI, layout="constrained")
    axes.set_title(title, fontsize=11)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _empty(figure: Figure, axes: Any, reason: str) -> Figure:
    text = textwrap.fill(reason, 90)
    axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])
    return figure


def save_figure(figure: Figure, path: Path) -> None:
    # Fixed size (no bbox_inches="tight"), so every plot has the same pixels.
    staging = path.with_name(f".{path.name}.partial")
    figure.savefig(staging, dpi=DPI, format="png")
    plt.close(figure)
    staging.replace(path)
