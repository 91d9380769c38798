"""The space as an Optuna define-by-run function, and the Optuna samplers."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import optuna

from search.params import Param


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
