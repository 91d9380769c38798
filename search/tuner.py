"""One function builds the Ray Tune ``Tuner`` of a sweep."""

from __future__ import annotations

import logging
from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from search.sampling import DefineByRun, build_sampler
from search.space import Space
from trainables.finetune import TrialSetup, tune_trainable
from trainables.hparams import EPOCH

log = logging.getLogger(__name__)

TUNE_DIR = "tune"
CHECKPOINTS_KEPT = 2  # the best ones by the sweep's metric; Ray also keeps the latest


def build_tuner(space: Space, sweep_dir: Path, setup: TrialSetup) -> tune.Tuner:
    """Wires the searcher, scheduler, resources and storage of a sweep."""
    metric, mode = space.trial.metric, space.trial.mode
    searcher = OptunaSearch(
        space=DefineByRun(space.params),
        metric=metric,
        mode=mode,
        sampler=build_sampler(space.search.sampler, space.search.seed, space.search.num_samples),
        points_to_evaluate=[dict(p) for p in space.search.start_from] or None,
    )
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, setup=setup, resolve=space.hparams),
        {"cpu": space.resources.cpus, "gpu": space.resources.gpus},
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=build_scheduler(space),
            num_samples=space.search.num_samples,
            # Without it Ray starts one pending trial of a custom searcher at a time.
            max_concurrent_trials=space.search.max_concurrent,
            time_budget_s=space.search.time_budget_s,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(sweep_dir.resolve()),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=CHECKPOINTS_KEPT,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            verbose=1,
        ),
    )


def build_scheduler(space: Space) -> TrialScheduler:
    sched = space.search.scheduler
    if sched.type == "none":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr=EPOCH,
        metric=space.trial.metric,
        mode=space.trial.mode,
        max_t=space.trial.max_epochs,
        grace_period=sched.grace_period,
        reduction_factor=sched.reduction_factor,
    )


def _trial_dirname(trial: tune.experiment.Trial) -> str:
    return f"trial_{trial.trial_id}"
