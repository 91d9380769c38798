"""The sweep's plots and report.md: at a sweep's end, and again by `ftsweep plot`.

``parameter_importance`` (engine/importance.py, Optuna's fANOVA) is passed in:
outputs/ does not import the engine.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from search.outputs.layout import BEST_DIR, LEADERBOARD_FILE, METRICS_FILE
from search.outputs.leaderboard import build_leaderboard, open_sweep
from search.outputs.plots import Importance
from search.space.loader import Space

log = logging.getLogger(__name__)


def draw_outputs(
    sweep_dir: Path,
    frame: pd.DataFrame,
    space: Space,
    finalists: list[dict[str, Any]],
    best_dir: Path | None,
    parameter_importance: Importance,
    *,
    interrupted: bool = False,
) -> None:
    """plots/*.png and report.md; a failure here is logged, never fatal to the sweep."""
    from search.outputs.plots import plot_sweep
    from search.outputs.report import write_report

    try:
        plot_sweep(sweep_dir, frame, space, parameter_importance)
        write_report(
            sweep_dir,
            frame,
            space,
            finalists=finalists,
            best_dir=best_dir,
            interrupted=interrupted,
        )
    except Exception:
        log.exception(
            "drawing the plots or report.md failed (the leaderboard and best/ are written); "
            "try again with `ftsweep plot %s`",
            sweep_dir,
        )


def redraw(sweep_dir: str | Path, parameter_importance: Importance) -> list[Path]:
    """`ftsweep plot`: the plots and report.md from the results folder as it is now."""
    from search.outputs.plots import plot_sweep
    from search.outputs.report import REPORT_FILE, write_report

    sweep_dir = Path(sweep_dir)
    space = open_sweep(sweep_dir)
    finished = (sweep_dir / LEADERBOARD_FILE).is_file()
    frame = build_leaderboard(sweep_dir, finished=finished)
    best_dir = sweep_dir / BEST_DIR
    metrics = best_dir / METRICS_FILE
    finalists = []
    if metrics.is_file():
        with contextlib.suppress(ValueError, OSError):
            finalists = json.loads(metrics.read_text()).get("finalists", [])
    paths = plot_sweep(sweep_dir, frame, space, parameter_importance)
    write_report(
        sweep_dir,
        frame,
        space,
        finalists=finalists,
        best_dir=best_dir if best_dir.is_dir() else None,
        interrupted=bool(frame["status"].isin(["running", "pending"]).any())
        if len(frame)
        else False,
    )
    return [*paths, sweep_dir / REPORT_FILE]
