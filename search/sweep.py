"""run_sweep: a space file in; a leaderboard and the best model out."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from search.engine import probe
from search.engine.cluster import check_cluster, check_fits, cluster_address, start_ray
from search.engine.tracking import mlflow_uri
from search.engine.tuner import (
    build_tuner,
    can_restore,
    prepare_data,
    quiet_optuna,
    ray_output,
    restore_tuner,
    set_callbacks,
    trial_setup,
)
from search.engine.warm_start import warm_start
from search.model.export import export_trial, replace_folder
from search.outputs import versions
from search.outputs.disk import disk_full_error, raise_if_disk_full, requeue_disk_full
from search.outputs.drawing import draw_outputs
from search.outputs.edits import check_edits
from search.outputs.layout import (
    BEST_DIR,
    LEADERBOARD_FILE,
    ORIGINAL_SPACE_FILE,
    SPACE_FILE,
    SPLIT_FILE,
    STORAGE_FILE,
    TUNE_DIR,
)
from search.outputs.leaderboard import build_leaderboard, open_sweep, usable
from search.outputs.lock import claim_free, driving, release
from search.outputs.ray_files import add_trials, prepare_resume, ray_statuses, sign_tuner
from search.outputs.storage import (
    experiment_root,
    is_uri,
    local_sweep,
    push,
    read_storage,
    storage_location,
    stored_sweep,
    write_storage,
)
from search.outputs.text import spreadsheet_safe
from search.space.loader import Space, load_space
from trainables.data import read_split, write_split
from trainables.errors import UserError
from trainables.finetune import TrialSetup
from trainables.scan import SCAN_FILE, problems_frame

log = logging.getLogger(__name__)

# Package data (also the repository's spaces/, a link to search/spaces/).
DEFAULT_SPACE = Path(__file__).resolve().parent / "spaces" / "quickstart.yaml"


@dataclass(frozen=True)
class SweepResult:
    """Where a finished sweep's outputs are."""

    sweep_dir: Path
    leaderboard: pd.DataFrame
    best_dir: Path | None
    metric: str
    interrupted: bool = False


def prepare_sweep(
    space_file: Path, results: Path, overrides: dict[str, Any], storage: str | None = None
) -> tuple[Space, Path]:
    """Validates the space, creates RESULTS/NAME with space.yaml and split.csv."""
    space = load_space(space_file, overrides)

    def taken(name: str) -> bool:
        folder = results / name
        stored = storage is not None and stored_sweep(storage_location(storage, name))
        return stored or (folder / TUNE_DIR).exists() or (folder / STORAGE_FILE).exists()

    # A rerun of the same file (or a second driver started with it) never
    # touches the earlier results: NAME-2, NAME-3, ...; the folder is this driver's.
    name = claim_free(results, space.name, taken, fixed="name" in overrides)
    where = storage_location(storage, space.name) if storage else str(results / space.name)
    if name is None:
        raise UserError(
            "a sweep with this name already ran here, or is running; choose another "
            "--name, or move the folder away to start over",
            where,
        )
    if name != space.name:
        log.info("%s already holds a sweep; this one goes to %s", where, name)
    given = {"data.path": space.data.path, "data.manifest": space.data.manifest}
    relative = {
        k: str(Path(v).resolve()) for k, v in given.items() if v and not Path(v).is_absolute()
    }
    if name != space.name or relative:
        # The sweep's space.yaml names its data absolutely: a resume started
        # from another folder (or a cluster's worker) finds the same images.
        space = load_space(space_file, {**overrides, "name": name, **relative})
    sweep_dir = results / space.name
    split = space.data.scan()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    space.dump(sweep_dir / SPACE_FILE)
    space.dump(sweep_dir / ORIGINAL_SPACE_FILE)  # what a resume compares space.yaml with
    versions.record(sweep_dir)
    if split.problems:  # what the data scan left out, and why
        spreadsheet_safe(problems_frame(split.problems)).to_csv(sweep_dir / SCAN_FILE, index=False)
    write_split(split.frame, sweep_dir / SPLIT_FILE)
    return space, sweep_dir


def run_sweep(
    space_file: str | Path | None = None,
    *,
    results: str | Path = "results",
    overrides: dict[str, Any] | None = None,
    address: str | None = None,
    storage: str | None = None,
    verbose: bool = False,
    mlflow: str | None = None,
) -> SweepResult:
    """Runs a sweep to the end and exports its best trial.

    Args:
        space_file: a search-space YAML file (default: spaces/quickstart.yaml).
        results: the folder that holds RESULTS/NAME.
        overrides: ``{"search.num_samples": 8, ...}``; they replace keys of the file.
        address: an existing Ray cluster (default: ``RAY_ADDRESS``, else start Ray
            on this machine, or use the Ray session this process already started).
        storage: a folder every node mounts, or a URI (s3://, gs://): Ray's
            experiment goes to STORAGE/NAME/tune with the sweep's files beside it.
        verbose: Ray Tune's own progress tables and trial logs instead of
            ftsweep's compact view (search/progress.py).
        mlflow: an MLflow tracking URI (a folder, http://host:5000, databricks);
            every trial becomes a run of the experiment named after the sweep.
    """
    probe.check()  # the Ray and Optuna internals ftsweep relies on, before anything starts
    space, sweep_dir = prepare_sweep(
        Path(space_file or DEFAULT_SPACE), Path(results), overrides or {}, storage
    )
    try:  # prepare_sweep claimed the folder (lock.py) for this driver
        mlflow = mlflow_uri(sweep_dir, mlflow)  # checked before any trial starts
        if storage:
            write_storage(sweep_dir, storage_location(storage, space.name))
            push(sweep_dir)  # space.yaml and split.csv: enough to resume from anywhere
        warm = warm_start(space, sweep_dir)  # search.warm_start: an earlier sweep's trials
        if warm is not None:
            print(warm.line(), flush=True)  # the progress view's first line
        trials = tuple(warm.trials) if warm is not None else ()
        build = lambda setup: build_tuner(space, sweep_dir, setup, trials)  # noqa: E731
        return _fit(
            _connect(space, sweep_dir, address, build, verbose), sweep_dir, space, verbose, mlflow
        )
    finally:
        release(sweep_dir)


def resume_sweep(
    sweep_dir: str | Path,
    *,
    retry_errored: bool = False,
    trust_results: bool = False,
    add: int = 0,
    address: str | None = None,
    results: str | Path = "results",
    verbose: bool = False,
    mlflow: str | None = None,
) -> SweepResult:
    """Continues an interrupted sweep where it stopped.

    Finished trials are kept as they are, unfinished ones continue from their
    last checkpoint, the Optuna sampler keeps its history, ASHA its rungs,
    and the sweep still ends after ``num_samples`` trials.

    Args:
        sweep_dir: RESULTS/NAME of the sweep, or its shared storage STORAGE/NAME
            (a path or a URI; a URI's sweep files are copied to RESULTS/NAME).
        retry_errored: also run errored trials again, from their last checkpoint.
        trust_results: resume although the saved state is not signed with this
            user's key (outputs/trust.py), once each pickle's scan passes.
        add: run this many trials more than the sweep planned (a finished sweep
            too); Optuna proposes them knowing every earlier result.
        address: an existing Ray cluster (default: ``RAY_ADDRESS``, else start
            Ray on this machine).
        results: where a sweep resumed from a URI keeps its files.
        verbose: Ray Tune's own output instead of ftsweep's compact view.
        mlflow: an MLflow tracking URI (default: the one the sweep ran with).
    """
    sweep_dir = local_sweep(str(sweep_dir), Path(results))
    with driving(sweep_dir):  # one driver per sweep folder (lock.py)
        probe.check()
        return _resume(sweep_dir, retry_errored, trust_results, add, address, verbose, mlflow)


def _resume(
    sweep_dir: Path,
    retry_errored: bool,
    trust_results: bool,
    add: int,
    address: str | None,
    verbose: bool,
    mlflow: str | None,
) -> SweepResult:
    space = open_sweep(sweep_dir)
    check_edits(sweep_dir)  # space.yaml edited since the run: refused, or applied and listed
    versions.check(sweep_dir)  # another Ray than the one that wrote tune/: refused
    mlflow = mlflow_uri(sweep_dir, mlflow)  # --mlflow, or the URI the sweep ran with
    experiment = f"{experiment_root(sweep_dir)}/{TUNE_DIR}"
    if not is_uri(experiment):
        experiment = str(Path(experiment).resolve())
    prepare_resume(experiment, trusted=trust_results)  # repaired, verified, rebased
    if not is_uri(experiment):
        requeue_disk_full(Path(experiment))  # trials a full disk stopped go on
    if not can_restore(experiment):
        raise UserError(
            "no Ray Tune experiment state to resume from (the sweep never started its "
            "trials, or tune/ was removed); start it again with `ftsweep run`",
            experiment,
        )
    if add < 0:
        raise UserError(f"--add takes a number of trials >= 1, not {add}", str(sweep_dir))
    if add:
        if is_uri(experiment):
            raise UserError(
                "--add edits the stored experiment state and needs it on a filesystem path; "
                "resume without --add, or copy STORAGE/NAME to a shared folder first",
                experiment,
            )
        total = add_trials(Path(experiment), add)
        # space.yaml says how many trials the sweep plans (status, leaderboard).
        extended = load_space(sweep_dir / SPACE_FILE, {"search.num_samples": total})
        extended.dump(sweep_dir / SPACE_FILE)
        if (sweep_dir / ORIGINAL_SPACE_FILE).is_file():  # --add is not an edit to refuse
            started = load_space(sweep_dir / ORIGINAL_SPACE_FILE, {"search.num_samples": total})
            started.dump(sweep_dir / ORIGINAL_SPACE_FILE)
        space = extended  # the progress view counts the added trials
        log.info("adding %d trials: the sweep now plans %d", add, total)

    def restore(setup: TrialSetup) -> Any:
        return restore_tuner(experiment, space, setup, retry_errored=retry_errored)

    tuner = _connect(space, sweep_dir, address, restore, verbose)
    versions.record(sweep_dir, resumed=True)
    return _fit(tuner, sweep_dir, space, verbose, mlflow)


def _connect(space: Space, sweep_dir: Path, address: str | None, build: Any, verbose: bool) -> Any:
    """Starts or joins Ray, checks every node, prepares the data; then ``build(setup)``."""
    on_cluster = cluster_address(address) is not None
    shared = read_storage(sweep_dir) is not None
    setup = trial_setup(space, sweep_dir, node_cache=shared, verbose=verbose)
    if not verbose:
        quiet_optuna()
    if not on_cluster:
        prepare_data(setup)  # decoded once, here, before any trial starts
    start_ray(address, verbose=verbose)
    check_fits(space.resources, on_cluster=on_cluster, where=str(sweep_dir / SPACE_FILE))
    if on_cluster:  # a Ray started here is this one machine, whose data was just scanned
        check_cluster(setup, shared_storage=shared)
    return build(setup)


def _fit(
    tuner: Any, sweep_dir: Path, space: Space, verbose: bool, mlflow: str | None
) -> SweepResult:
    """Runs the Tuner; SIGTERM stops it as cleanly as Ctrl-C (Ray handles SIGINT), and
    so does a full disk (engine/disk_guard.py), which then ends with exit 2."""
    guard = set_callbacks(tuner, space, sweep_dir, verbose=verbose, mlflow_uri=mlflow)
    sign_tuner(f"{experiment_root(sweep_dir)}/{TUNE_DIR}")  # each save: StateBackup
    # Ray saves its experiment state (what resume reads) at most every 10 s by
    # default; more often keeps what a killed driver loses to about one epoch.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    previous = signal.getsignal(signal.SIGTERM)
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        with ray_output(verbose=verbose):
            tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C cut Ray's own ending short
        log.warning("stopped at once (Ctrl-C twice): resume starts from the last saved state")
        return finish_sweep(sweep_dir, interrupted=True)  # the leaderboard, the hint
    except Exception as exc:  # a write of Ray's own failed for lack of space
        raise_if_disk_full(exc, sweep_dir)  # its last state save stays: resume goes on
        raise
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if guard is not None and guard.stopped:
        try:  # the leaderboard so far, while it fits
            finish_sweep(sweep_dir, interrupted=True)
        except OSError as exc:
            log.warning("could not write the sweep's outputs: %s", exc)
        raise disk_full_error(sweep_dir, guard.stopped)
    # After Ctrl-C Ray's fit() returns normally; its saved state still lists
    # the trials that were running.
    unfinished = {"RUNNING", "PAUSED", "PENDING"} & set(ray_statuses(sweep_dir).values())
    return finish_sweep(sweep_dir, interrupted=bool(unfinished))


def finish_sweep(sweep_dir: Path, *, interrupted: bool = False) -> SweepResult:
    """Writes leaderboard.csv, tests the finalists, exports the best trial (so far)
    to best/, and draws the plots and report.md.

    Each output is written as soon as it is known, so a failure in a later
    step (a plot, say) never costs an earlier one.
    """
    from search.model.ensemble import score_finalists_ensemble
    from search.model.finalists import test_finalists
    from search.model.readouts import Readouts

    space = load_space(sweep_dir / SPACE_FILE)
    frame = build_leaderboard(sweep_dir, finished=not interrupted)
    spreadsheet_safe(frame).to_csv(sweep_dir / LEADERBOARD_FILE, index=False)
    best_dir = None
    finalists: list[dict[str, Any]] = []
    if not usable(frame, space.trial.metric).empty if len(frame) else False:
        # Each finalist's checkpoint read and run on val and test once, for all three steps.
        readouts = Readouts(space, read_split(sweep_dir / SPLIT_FILE))
        if not interrupted:  # an interrupted sweep's finalists may still improve
            finalists = test_finalists(sweep_dir, frame, space, readouts)
            if finalists:  # the leaderboard gains their test columns
                frame = build_leaderboard(sweep_dir, finished=True)
                spreadsheet_safe(frame).to_csv(sweep_dir / LEADERBOARD_FILE, index=False)
                score_finalists_ensemble(sweep_dir, finalists, readouts)  # ensemble.json
        staging = sweep_dir / f".{BEST_DIR}.partial"
        export_trial(sweep_dir, staging, finalists=finalists, readouts=readouts)
        best_dir = sweep_dir / BEST_DIR
        replace_folder(staging, best_dir)
    elif "feasible" in frame and len(frame) and not frame["feasible"].any():
        log.warning("no trial is within search.constraints; nothing exported")
    else:
        log.warning("no trial finished an epoch; nothing exported")
    from search.engine.importance import parameter_importance

    draw_outputs(
        sweep_dir, frame, space, finalists, best_dir, parameter_importance, interrupted=interrupted
    )
    try:
        push(sweep_dir)  # the leaderboard, best/ and the report, beside the experiment
    except OSError as exc:
        log.warning("could not copy the sweep's files to its storage: %s", exc)
    return SweepResult(sweep_dir, frame, best_dir, space.trial.metric, interrupted)
