"""run_sweep: a space file in; a leaderboard and the best model out."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from search.export import export_trial, replace_folder
from search.leaderboard import (
    LEADERBOARD_FILE,
    SPACE_FILE,
    SPLIT_FILE,
    build_leaderboard,
    ray_statuses,
)
from search.space import Space, load_space
from search.tuner import TUNE_DIR, build_tuner
from trainables.data import write_split
from trainables.errors import UserError
from trainables.finetune import TrialSetup

log = logging.getLogger(__name__)

DEFAULT_SPACE = Path(__file__).resolve().parent.parent / "spaces" / "quickstart.yaml"
BEST_DIR = "best"


@dataclass(frozen=True)
class SweepResult:
    """Where a finished sweep's outputs are."""

    sweep_dir: Path
    leaderboard: pd.DataFrame
    best_dir: Path | None
    metric: str
    interrupted: bool = False


def prepare_sweep(space_file: Path, results: Path, overrides: dict[str, Any]) -> tuple[Space, Path]:
    """Validates the space, creates RESULTS/NAME with space.yaml and split.csv."""
    space = load_space(space_file, overrides)
    sweep_dir = results / space.name
    if (sweep_dir / TUNE_DIR).exists():
        if "name" in overrides:
            raise UserError(
                "a sweep with this name already ran here; choose another --name, "
                "or move the folder away to start over",
                str(sweep_dir),
            )
        # A rerun of the same file never touches the earlier results.
        taken = {p.name for p in results.glob(f"{space.name}-*")}
        suffix = next(i for i in range(2, 10_000) if f"{space.name}-{i}" not in taken)
        space = load_space(space_file, {**overrides, "name": f"{space.name}-{suffix}"})
        log.info("%s already holds a sweep; this one goes to %s-%d", sweep_dir, sweep_dir, suffix)
        sweep_dir = results / space.name
    split = space.data.split()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    space.dump(sweep_dir / SPACE_FILE)
    write_split(split, sweep_dir / SPLIT_FILE)
    return space, sweep_dir


def run_sweep(
    space_file: str | Path | None = None,
    *,
    results: str | Path = "results",
    overrides: dict[str, Any] | None = None,
    address: str | None = None,
) -> SweepResult:
    """Runs a sweep to the end and exports its best trial.

    Args:
        space_file: a search-space YAML file (default: spaces/quickstart.yaml).
        results: the folder that holds RESULTS/NAME.
        overrides: ``{"search.num_samples": 8, ...}``; they replace keys of the file.
        address: an existing Ray cluster; default: start Ray on this machine
            (or use the Ray session this process already started).
    """
    import ray

    space, sweep_dir = prepare_sweep(
        Path(space_file or DEFAULT_SPACE), Path(results), overrides or {}
    )
    setup = TrialSetup(
        split_csv=str((sweep_dir / SPLIT_FILE).resolve()),
        data_root=str(Path(space.data.path).resolve()) if space.data.path else None,
        image_size=space.data.image_size,
        max_epochs=space.trial.max_epochs,
        batch_size=space.trial.batch_size,
        precision=space.trial.precision,
        seed=space.search.seed,
        cpus=space.resources.cpus,
    )
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "60")
    build_tuner(space, sweep_dir, setup).fit()
    # After Ctrl-C Ray's fit() returns normally; its saved state still lists
    # the trials that were running.
    unfinished = {"RUNNING", "PAUSED", "PENDING"} & set(ray_statuses(sweep_dir).values())
    return finish_sweep(sweep_dir, interrupted=bool(unfinished))


def finish_sweep(sweep_dir: Path, *, interrupted: bool = False) -> SweepResult:
    """Writes leaderboard.csv and exports the best trial (so far) to best/."""
    space = load_space(sweep_dir / SPACE_FILE)
    frame = build_leaderboard(sweep_dir, finished=not interrupted)
    frame.to_csv(sweep_dir / LEADERBOARD_FILE, index=False)
    best_dir = None
    if frame[f"best_{space.trial.metric}"].notna().any() if len(frame) else False:
        staging = sweep_dir / f".{BEST_DIR}.partial"
        export_trial(sweep_dir, staging)
        best_dir = sweep_dir / BEST_DIR
        replace_folder(staging, best_dir)
    else:
        log.warning("no trial finished an epoch; nothing exported")
    return SweepResult(sweep_dir, frame, best_dir, space.trial.metric, interrupted)
