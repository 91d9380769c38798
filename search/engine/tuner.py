"""Builds the Ray Tune pieces of a sweep: trainable, searcher, scheduler, Tuner."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import TBXLoggerCallback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.engine.asha import ResumableASHA
from search.engine.disk_guard import DiskGuard
from search.engine.progress import SweepProgress
from search.engine.searcher import DefineByRun, PruningOptunaSearch, SamplerRecipe
from search.engine.state_backup import StateBackup
from search.engine.tracking import tracking_callbacks
from search.outputs.layout import SPLIT_FILE, TUNE_DIR
from search.outputs.storage import experiment_root
from search.space.loader import Space
from search.space.params import walk
from trainables.cache import CACHE_DIR, ensure_cache, plan_cache
from trainables.data import item_decoder
from trainables.finetune import TrialSetup, split_frame, tune_trainable
from trainables.hparams import EPOCH

log = logging.getLogger(__name__)

NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"  # Ray Tune's switch between its two output engines
SNAPSHOT_WARNING = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"  # 0: off
CHECKPOINTS_KEPT = 2  # the best ones by the sweep's metric; Ray also keeps the latest


def trial_setup(
    space: Space, sweep_dir: Path, *, node_cache: bool = False, verbose: bool = False
) -> TrialSetup:
    """The settings every trial of a sweep shares.

    The split travels with them (workers of a cluster cannot read the
    driver's results folder). ``node_cache``: each node decodes the images
    into its own local temporary folder rather than the results folder.
    ``verbose``: trials keep Ray Train's log line for every checkpoint.
    """
    split_csv = (sweep_dir / SPLIT_FILE).resolve()
    data_root = space.data.root
    cache_dir = node_cache_dir() if node_cache else sweep_dir / CACHE_DIR
    return TrialSetup(
        split_csv=str(split_csv),
        split_rows=split_csv.read_text(),
        data_root=data_root,
        image_size=space.data.image_size,
        max_epochs=space.trial.max_epochs,
        batch_size=space.trial.batch_size,
        precision=space.trial.precision,
        seed=space.search.seed,
        cpus=space.resources.cpus,
        cache=plan_cache(
            split_csv, data_root, space.data.image_size, cache_dir, space.data.cache_budget
        ),
        compile=space.trial.compile,
        verbose=verbose,
        sampler=space.data.sampler,
        limits=space.search.constraints,
    )


def node_cache_dir() -> Path:
    """The image cache's folder on each node of a cluster: its local temporary disk."""
    return Path(os.environ.get("FTSWEEP_CACHE_DIR") or Path(tempfile.gettempdir()) / "ftsweep")


def prepare_data(setup: TrialSetup) -> None:
    """Decodes the sweep's images into this node's cache before any trial starts.

    Trials on this machine then map the file without decoding; a resumed
    sweep finds it done. Over the budget, trials decode from disk instead.
    """
    if setup.cache is None:
        log.info(
            "the decoded images would exceed data.cache_budget: every trial decodes its "
            "images from disk each epoch (raise the budget to cache them once)"
        )
        return
    frame = split_frame(setup)
    ensure_cache(setup.cache, frame, item_decoder(setup.data_root, setup.image_size))


def build_trainable(space: Space, setup: TrialSetup) -> Any:
    """The trainable as Ray runs it; ``run`` and ``resume`` must build the same one."""
    return tune.with_resources(
        tune.with_parameters(tune_trainable, setup=setup, resolve=space.hparams),
        {"cpu": space.resources.cpus, "gpu": space.resources.gpus},
    )


def build_tuner(
    space: Space, sweep_dir: Path, setup: TrialSetup, warm: tuple[dict[str, Any], ...] = ()
) -> tune.Tuner:
    """Wires the searcher, scheduler, resources and storage of a sweep; ``warm``:
    an earlier sweep's trials (engine/warm_start.py) the study starts with."""
    metric, mode = space.trial.metric, space.trial.mode
    searcher = PruningOptunaSearch(
        space=DefineByRun(space.params),
        metric=metric,
        mode=mode,
        sampler=SamplerRecipe(space.search.sampler, space.search.seed, space.search.num_samples),
        points_to_evaluate=[dict(p) for p in space.search.start_from] or None,
        max_epochs=space.trial.max_epochs,
        limits=space.search.constraints,
        warm=warm,
    )
    return tune.Tuner(
        build_trainable(space, setup),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=build_scheduler(space),
            num_samples=space.search.num_samples,
            # Without it Ray starts one pending trial of a custom searcher at a time.
            max_concurrent_trials=space.search.max_concurrent,
            time_budget_s=space.search.time_budget_s,
            trial_dirname_creator=_trial_dirname,
            # A finished trial's worker runs the next one: no new process, no
            # new CUDA context (the trainable resets everything it sets).
            reuse_actors=space.resources.reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            # RESULTS/NAME, or shared storage every node of a cluster reaches.
            storage_path=experiment_root(sweep_dir),
            # A failed trial restarts from its last checkpoint, up to this many times.
            failure_config=tune.FailureConfig(max_failures=space.trial.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=CHECKPOINTS_KEPT,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            callbacks=[StateBackup(f"{experiment_root(sweep_dir)}/{TUNE_DIR}")],  # set_callbacks
        ),
    )


def set_callbacks(
    tuner: tune.Tuner,
    space: Space,
    sweep_dir: Path,
    *,
    verbose: bool = False,
    mlflow_uri: str | None = None,
) -> DiskGuard | None:
    """The progress view (or Ray's own tables with ``verbose``), TensorBoard's
    and MLflow's loggers, the state backup and the disk guard (returned; None
    for a Ray Client connection).

    Set on the run config just before ``fit``, for a new and a restored Tuner
    alike (a restored one brings back the callbacks pickled when it was
    created, with the trial count it had then).
    """
    local = tuner._local_tuner  # None only for a Ray Client connection (ray://)
    if local is None:
        return None
    run_config = local.get_run_config()
    ours = (SweepProgress, TBXLoggerCallback, MLflowLoggerCallback, StateBackup, DiskGuard)
    callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, ours)]
    callbacks += tracking_callbacks(space, sweep_dir, mlflow_uri)
    # Where the experiment is now (it may have moved since the Tuner was pickled).
    callbacks.append(StateBackup(f"{experiment_root(sweep_dir)}/{TUNE_DIR}"))
    guard = DiskGuard(sweep_dir)
    callbacks.append(guard)
    run_config.verbose = None if verbose else 0  # None: Ray's default output
    if not verbose:
        sched = space.search.scheduler
        scheduler = local._tune_config.scheduler  # the one fit runs (unpickled on a resume)
        callbacks.append(
            SweepProgress(
                metric=space.trial.metric,
                mode=space.trial.mode,
                num_samples=space.search.num_samples,
                max_epochs=space.trial.max_epochs,
                time_budget_s=space.search.time_budget_s,
                grace_period=sched.grace_period if sched.type == "asha" else None,
                reduction_factor=sched.reduction_factor,
                stopped_by_asha=(
                    scheduler.stopped if isinstance(scheduler, ResumableASHA) else _no_asha
                ),
                title=plan(space),
                constants=frozenset(p.key for p in walk(space.params) if p.kind == "const"),
            )
        )
    run_config.callbacks = callbacks
    return guard


def _no_asha(trial_id: str) -> bool:
    """Without ASHA only the time budget ends a trial short."""
    return False


def plan(space: Space) -> str:
    """The progress view's first line: what the sweep will do."""
    sched = space.search.scheduler
    stopping = (
        f"ASHA stops weak trials from epoch {sched.grace_period} (keeps 1 in "
        f"{sched.reduction_factor:g})"
        if sched.type == "asha"
        else "no early stopping"
    )
    budget = ""
    if space.search.time_budget_s is not None:
        budget = f", no new trials after {space.search.time_budget_s / 3600:.3g} h"
    return (
        f"sweep {space.name}: {space.search.num_samples} trials of up to "
        f"{space.trial.max_epochs} epochs, at most {space.search.max_concurrent} at once"
        f"{budget}; {stopping}; best by {space.trial.metric} ({space.trial.mode}). "
        "Ray's own output: --verbose"
    )


@contextlib.contextmanager
def ray_output(*, verbose: bool) -> Iterator[None]:
    """Quiets Ray Tune's own output around ``fit`` unless ``verbose``.

    Ray's newer output engine prints its experiment table even at verbose=0;
    its older one, at 0, prints nothing. Ray Tune's INFO log lines (where it
    wrote its state) are kept at WARNING and up for the same time, and its
    warning that state saves come often (three lines each time, on short
    epochs, where ftsweep saves after each epoch on purpose) is off.
    """
    if verbose:
        yield
        return
    switches = {NEW_OUTPUT: "0", SNAPSHOT_WARNING: "0"}
    previous = {name: os.environ.get(name) for name in switches}
    tune_log = logging.getLogger("ray.tune")
    level = tune_log.level
    os.environ.update(switches)
    tune_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        tune_log.setLevel(level)
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build_scheduler(space: Space) -> TrialScheduler:
    sched = space.search.scheduler
    if sched.type == "none":
        return FIFOScheduler()
    return ResumableASHA(
        time_attr=EPOCH,
        metric=space.trial.metric,
        mode=space.trial.mode,
        max_t=space.trial.max_epochs,
        grace_period=sched.grace_period,
        reduction_factor=sched.reduction_factor,
    )


def _trial_dirname(trial: tune.experiment.Trial) -> str:
    return f"trial_{trial.trial_id}"


def can_restore(experiment: str) -> bool:
    """Whether Ray Tune finds a saved experiment to resume at this path or URI."""
    return bool(tune.Tuner.can_restore(experiment))


def restore_tuner(
    experiment: str, space: Space, setup: TrialSetup, *, retry_errored: bool = False
) -> tune.Tuner:
    """Ray's Tuner of an interrupted sweep, with the trainable ``run`` built.

    Ray restores its TuneConfig from tuner.pkl; the trials at once and the
    time budget come from space.yaml instead (a resume may change them:
    outputs/edits.py).
    """
    tuner = tune.Tuner.restore(
        experiment,
        build_trainable(space, setup),
        resume_unfinished=True,
        resume_errored=retry_errored,
    )
    local = tuner._local_tuner  # None only for a Ray Client connection (ray://)
    if local is not None:
        local._tune_config.max_concurrent_trials = space.search.max_concurrent
        local._tune_config.time_budget_s = space.search.time_budget_s
    return tuner


def quiet_optuna() -> None:
    """Keeps Optuna's INFO lines ("A new study created in memory") out of the view."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
