"""The space as an Optuna define-by-run function, and the Optuna samplers."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from search.space.params import Param
from trainables.hparams import EPOCH


@dataclass(frozen=True)
class DefineByRun:
    """Samples a space on an Optuna trial; conditional sub-spaces only when chosen.

    Returns the constants of the active branch (OptunaSearch merges them into
    the trial's config). A dataclass, not a closure, so the searcher pickles.
    """

    params: tuple[Param, ...]

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        constants: dict[str, Any] = {}
        _sample(trial, self.params, constants)
        return constants


def _sample(trial: optuna.Trial, params: tuple[Param, ...], constants: dict[str, Any]) -> None:
    for param in params:
        if param.kind == "const":
            constants[param.key] = param.values[0]
            continue
        if param.kind == "choice":
            value = trial.suggest_categorical(param.key, list(param.values))
            if param.branches:
                _sample(trial, param.branches[param.values.index(value)], constants)
        elif param.kind == "int":
            trial.suggest_int(
                param.key, int(param.low), int(param.high), step=int(param.step or 1), log=param.log
            )
        else:
            trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log)


def build_sampler(name: str, seed: int, num_samples: int) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by name, seeded.

    TPE is multivariate with grouped conditionals, and uses the constant liar
    so that trials proposed while others still run do not pile onto one point.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            constant_liar=True,
            n_startup_trials=min(10, max(3, num_samples // 4)),
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"unknown sampler {name!r}")


class PruningOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about how a trial ended.

    A trial ASHA stopped before ``max_epochs`` is PRUNED (Optuna then uses its
    last reported value), not COMPLETE with a low-epoch score; an errored
    trial is FAIL.
    """

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # A trial resumed from its checkpoint reports an epoch Optuna has seen
        # when Ray saved the result before the checkpoint; Optuna keeps the first.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The reported value is ignored")
            super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        stopped_early = (
            result is not None and result.get(EPOCH, self._max_epochs) < self._max_epochs
        )
        if error or not stopped_early or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        assert self._ot_study is not None
        self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)
