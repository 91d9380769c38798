"""RESULTS/NAME/report.md: the sweep on one page (best trial, top of the leaderboard,
finalists on the test split, cost, settings, plots)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from search.outputs.layout import (
    ENSEMBLE_FILE,
    LEADERBOARD_FILE,
    REPORT_FILE,
    SPLIT_FILE,
    STATUSES,
)
from search.outputs.leaderboard import render
from search.outputs.plots import PLOTS, PLOTS_DIR
from search.outputs.text import duration
from search.space.loader import Space
from trainables.data import classes_of, read_split
from trainables.scan import SCAN_FILE

TOP = 10
PLOT_TITLES = {
    "optimization_history": "Optimization history",
    "parallel_coordinates": "Parallel coordinates",
    "param_importance": "Parameter importance",
    "learning_curves": "Learning curves",
    "accuracy_latency": "Accuracy against latency",
}


def write_report(
    sweep_dir: Path,
    frame: pd.DataFrame,
    space: Space,
    *,
    finalists: list[dict[str, Any]] | None = None,
    best_dir: Path | None = None,
    interrupted: bool = False,
) -> Path:
    """Writes report.md next to the leaderboard; returns its path.

    Long: the report's sections in the order a reader meets them; each is a
    few lines of markdown, so one screen shows the whole document's shape.
    """
    metric = space.trial.metric
    key = f"best_{metric}"
    lines = [f"# Sweep `{space.name}`", ""]
    counts = frame["status"].value_counts() if len(frame) else pd.Series(dtype=int)
    summary = ", ".join(f"{counts[s]} {s.replace('_', ' ')}" for s in STATUSES if s in counts)
    lines.append(
        f"{len(frame)} of {space.search.num_samples} planned trials ({summary or 'none'}); "
        f"metric `{metric}` ({space.trial.mode})."
        + (f" **Interrupted**: continue with `ftsweep resume {sweep_dir}`." if interrupted else "")
    )
    lines.append("")
    if best_dir is not None and len(frame) and pd.notna(frame.iloc[0].get(key)):
        best = frame.iloc[0]
        test = f", test accuracy {best['test_accuracy']:.4f}" if _has(best, "test_accuracy") else ""
        lines += [
            f"**Best:** trial `{best['trial_id']}` ({best.get('backbone', '?')}), "
            f"{metric} {best[key]:.4f} at epoch {best['best_epoch']}{test}. "
            f"Exported to `{best_dir.name}/`:",
            "",
            "```python",
            "from search import load_model",
            f"model = load_model('{best_dir}')",
            "model.predict(['image.jpg'])",
            "```",
            "",
        ]
    lines += ["## Top of the leaderboard", ""]
    if len(frame):
        shown = [c for c in _top_columns(space, frame) if c in frame]
        lines += [render(frame[shown].head(TOP), "markdown"), ""]
        lines.append(
            f"All {len(frame)} trials, every column: [{LEADERBOARD_FILE}]({LEADERBOARD_FILE})."
        )
    else:
        lines.append("No trial has started yet.")
    lines.append("")
    if finalists:
        lines += [
            "## Finalists on the test split",
            "",
            "The pick is made on validation; the test split, never used to choose, says how "
            "far to trust it.",
            "",
            "| rank | trial | epoch | val accuracy | test accuracy | test macro F1 | test loss |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in finalists:
            lines.append(
                f"| {f['rank']} | `{f['trial_id']}` | {f['epoch']} | "
                f"{f['val'].get('accuracy', float('nan')):.4f} | {f['test']['accuracy']:.4f} | "
                f"{f['test']['f1_macro']:.4f} | {f['test']['loss']:.4f} |"
            )
        lines += ["", *_ensemble_line(sweep_dir)]
    lines += ["## Cost", "", *_cost(frame, space), ""]
    lines += ["## Settings", "", *_settings(sweep_dir, space), ""]
    lines += ["## Plots", ""]
    for name in PLOTS:
        if (sweep_dir / PLOTS_DIR / f"{name}.png").is_file():
            lines += [
                f"### {PLOT_TITLES[name]}",
                "",
                f"![{PLOT_TITLES[name]}]({PLOTS_DIR}/{name}.png)",
                "",
            ]
    lines.append(f"_Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by ftsweep._")
    path = sweep_dir / REPORT_FILE
    staging = sweep_dir / f".{REPORT_FILE}.partial"
    staging.write_text("\n".join(lines) + "\n", encoding="utf-8")
    staging.replace(path)
    return path


def _ensemble_line(sweep_dir: Path) -> list[str]:
    """The finalists' ensemble on the test split beside the best alone (ensemble.json)."""
    try:
        found = json.loads((sweep_dir / ENSEMBLE_FILE).read_text())
        ensemble, best = found["test"], found["single_best"]
        line = (
            f"**Ensemble of the {len(found['members'])} finalists** (their logits averaged, "
            f"each after its own temperature): test accuracy {ensemble['accuracy']:.4f}, "
            f"macro F1 {ensemble['f1_macro']:.4f}, loss {ensemble['loss']:.4f}; the best "
            f"alone (`{best['trial_id']}`): {best['test']['accuracy']:.4f}, "
            f"{best['test']['f1_macro']:.4f}, {best['test']['loss']:.4f}. "
            f"Export it with `{found['export']}`."
        )
    except (OSError, ValueError, KeyError, TypeError):  # none, or from another version
        return []
    return [line, ""]


def _top_columns(space: Space, frame: pd.DataFrame) -> list[str]:
    metric = space.trial.metric
    searched = [c for c in frame.columns if "/" in c or c in _param_columns(space)]
    return [
        "rank",
        "trial_id",
        "status",
        f"best_{metric}",
        "test_accuracy",
        *searched,
        "best_epoch",
        "epochs",
        "train_seconds",
        "params",
        "latency_ms",
    ]


def _param_columns(space: Space) -> set[str]:
    from search.space.params import walk

    return {p.column for p in walk(space.params) if p.kind != "const"}


def _cost(frame: pd.DataFrame, space: Space) -> list[str]:
    if not len(frame) or "train_seconds" not in frame:
        return ["Nothing trained yet."]
    epochs = int(frame["epochs"].fillna(0).sum())
    budget = len(frame) * space.trial.max_epochs
    wall = float(frame["ended_at"].max() - frame["started_at"].min()) if "ended_at" in frame else 0
    lines = [
        f"- Wall time from the first trial's start to the last report: {duration(wall)}.",
        f"- Training time summed over trials: {duration(float(frame['train_seconds'].sum()))}"
        + (
            f"; GPU time: {frame['gpu_seconds'].sum() / 3600:.2f} GPU-hours "
            f"at {space.resources.gpus:g} GPU per trial."
            if space.resources.gpus
            else " (CPU only)."
        ),
        f"- Epochs trained: {epochs} of the {budget} that {len(frame)} trials of "
        f"{space.trial.max_epochs} epochs would take ({epochs / max(1, budget):.0%}); "
        "the rest were saved by early stopping.",
    ]
    use = slot_utilization(frame)
    if use is not None:
        lines.append(
            f"- Slot utilization: {use[0]:.0%} of {use[1]} trial slot{'s' if use[1] > 1 else ''} "
            "x the wall time above was spent in trials' epochs (the rest: trial starts, "
            "checkpoints, slots idle at the end)."
        )
    if "failures" in frame and frame["failures"].fillna(0).sum():
        lines.append(f"- Trial failures retried from a checkpoint: {int(frame['failures'].sum())}.")
    return lines


def slot_utilization(frame: pd.DataFrame) -> tuple[float, int] | None:
    """(share of slot-time spent in epochs, slots), slots being the most trials that overlapped.

    From each trial's start to its last report; None without those columns.
    """
    if not {"started_at", "ended_at", "train_seconds"} <= set(frame.columns):
        return None
    spans = frame[["started_at", "ended_at", "train_seconds"]].dropna()
    if spans.empty:
        return None
    events = sorted(
        [(t, 1) for t in spans["started_at"]] + [(t, -1) for t in spans["ended_at"]],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    wall = float(spans["ended_at"].max() - spans["started_at"].min())
    if wall <= 0 or peak == 0:
        return None
    return float(spans["train_seconds"].sum()) / (peak * wall), peak


def _settings(sweep_dir: Path, space: Space) -> list[str]:
    data = space.data.described
    lines = [f"- Data: {data}, images {space.data.image_size} px."]
    try:
        split = read_split(sweep_dir / SPLIT_FILE)
        sizes = split["split"].value_counts()
        parts = ", ".join(f"{sizes[s]} {s}" for s in ("train", "val", "test") if s in sizes)
        lines.append(
            f"- Split: {parts}; {len(classes_of(split))} classes ([{SPLIT_FILE}]({SPLIT_FILE}))."
        )
    except Exception:  # a report never fails on a missing split
        pass
    if (sweep_dir / SCAN_FILE).is_file():
        left = len(pd.read_csv(sweep_dir / SCAN_FILE))
        lines.append(f"- The data scan left out {left} files: [{SCAN_FILE}]({SCAN_FILE}).")
    scheduler = space.search.scheduler
    asha = (
        f"ASHA (grace period {scheduler.grace_period}, "
        f"reduction factor {scheduler.reduction_factor:g})"
        if scheduler.type == "asha"
        else "no early stopping"
    )
    budget = (
        f", time budget {duration(space.search.time_budget_s)}"
        if space.search.time_budget_s
        else ""
    )
    lines += [
        f"- Trials: up to {space.trial.max_epochs} epochs, batch {space.trial.batch_size}, "
        f"precision {space.trial.precision}, retries {space.trial.max_failures}.",
        f"- Search: {space.search.num_samples} trials, {space.search.max_concurrent} at once, "
        f"Optuna {space.search.sampler} (seed {space.search.seed}), {asha}{budget}.",
        f"- Resources per trial: {space.resources.cpus:g} CPU, {space.resources.gpus:g} GPU.",
        "",
        "The space searched (from [space.yaml](space.yaml)):",
        "",
        "```yaml",
        yaml.safe_dump({"space": space.raw.get("space", {})}, sort_keys=False).rstrip(),
        "```",
    ]
    return lines


def _has(row: pd.Series, column: str) -> bool:
    return column in row and pd.notna(row[column])
