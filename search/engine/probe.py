"""Checks, at start-up, every piece of Ray and Optuna that ftsweep relies on
beyond their public API (the list is search/engine/__init__.py's docstring).

A Ray or Optuna upgrade that renames one of them stops ``run`` and ``resume``
before anything starts, with exit 2 naming the installed versions and the
range ftsweep supports, instead of a traceback an hour into a sweep.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from trainables.errors import UserError

# Versions this release of ftsweep was tested with: [lowest, first unsupported).
RAY_SUPPORTED = ("2.57", "2.61")
OPTUNA_SUPPORTED = ("4.0", "5.2")


def problems() -> list[str]:
    """What is missing or changed, one line each; empty when all is as expected."""
    found = []
    for name, check in _checks():
        try:
            ok = check()
        except Exception as exc:  # an import that fails, a signature that changed
            ok = False
            name = f"{name} ({type(exc).__name__}: {exc})"
        if not ok:
            found.append(name)
    return found


@functools.cache
def check() -> None:
    """Raises UserError when something ftsweep relies on is missing (once per process)."""
    missing = problems()
    if missing:
        raise UserError(
            f"this Ray or Optuna differs from what ftsweep relies on: {'; '.join(missing)}. "
            f"Installed: ray {version('ray')}, optuna {version('optuna')}; ftsweep supports "
            f"ray >={RAY_SUPPORTED[0]},<{RAY_SUPPORTED[1]} and optuna "
            f">={OPTUNA_SUPPORTED[0]},<{OPTUNA_SUPPORTED[1]}. Install a supported pair, e.g. "
            f"pip install 'ray[tune]>={RAY_SUPPORTED[0]},<{RAY_SUPPORTED[1]}' "
            f"'optuna>={OPTUNA_SUPPORTED[0]},<{OPTUNA_SUPPORTED[1]}'"
        )


def _checks() -> list[tuple[str, Callable[[], bool]]]:
    return [
        ("Tuner._local_tuner and TunerInternal._tune_config", _tuner),
        (
            "ASHAScheduler's _brackets/_trial_info/_metric/_time_attr/_metric_op/"
            "_num_stopped/_max_t",
            _asha,
        ),
        ("_Bracket.on_result(trial, cur_iter, cur_rew)", _bracket),
        (
            "OptunaSearch's _ot_study/_ot_trials/_completed_trials/_sampler/_storage/_mode/"
            "_setup_study(mode) and Searcher.CKPT_FILE_TMPL",
            _optuna_search,
        ),
        ("Optuna's enqueued trial holds system_attrs['fixed_params']", _enqueued),
        ("Optuna's trial.set_constraint(key, v) is system_attrs['constraints:key']", _constraint),
        ("TBXLoggerCallback._try_log_hparams(trial, result)", _tensorboard),
        ("MLflowLoggerCallback._trial_runs and mlflow_util._get_client", _mlflow),
        ("SearchGenerator.get_state keys counter/total_samples/finished/experiment", _generator),
        ("StorageContext's experiment_fs_path/experiment_driver_staging_path", _storage),
        ("Callback.get_state", _callback),
        ("tune.run ends like Ctrl-C on SIGUSR1, and Trial.error_file", _stop_signal),
    ]


def _tuner() -> bool:
    from ray import tune
    from ray.tune.impl.tuner_internal import TunerInternal

    return (
        "_local_tuner" in inspect.getsource(tune.Tuner.__init__)
        and hasattr(tune.Tuner, "get_results")
        and "self._tune_config = " in inspect.getsource(TunerInternal.__init__)
    )


def _asha() -> bool:
    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(metric="m", mode="max", max_t=4, grace_period=1)
    names = (
        "_brackets",
        "_trial_info",
        "_metric",
        "_time_attr",
        "_metric_op",
        "_num_stopped",
        "_max_t",
    )
    return all(hasattr(asha, n) for n in names) and isinstance(asha._brackets, list)


def _bracket() -> bool:
    from ray.tune.schedulers.async_hyperband import _Bracket

    return list(inspect.signature(_Bracket.on_result).parameters) == [
        "self",
        "trial",
        "cur_iter",
        "cur_rew",
    ]


def _optuna_search() -> bool:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory"
    try:
        search = OptunaSearch(space=lambda trial: None, metric="m", mode="max")
    finally:
        optuna.logging.set_verbosity(level)
    names = ("_ot_study", "_ot_trials", "_completed_trials", "_sampler", "_storage", "_mode",
             "_points_to_evaluate")  # fmt: skip
    return (
        all(hasattr(search, n) for n in names)
        and list(inspect.signature(OptunaSearch._setup_study).parameters) == ["self", "mode"]
        and "CKPT_FILE_TMPL.format" in inspect.getsource(OptunaSearch.restore_from_dir)
    )


def _quiet_study() -> Any:
    """An in-memory study, without Optuna's "A new study created in memory" line."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study()
    finally:
        optuna.logging.set_verbosity(level)


def _enqueued() -> bool:
    study = _quiet_study()
    study.enqueue_trial({"x": 1})
    return study.trials[0].system_attrs.get("fixed_params") == {"x": 1}


def _constraint() -> bool:
    """searcher.PruningOptunaSearch writes a restored trial's constraints in the
    system attribute that Trial.set_constraint writes, before add_trial."""
    study = _quiet_study()
    trial = study.ask()
    trial.set_constraint("params", 0.5)
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    return frozen.system_attrs.get("constraints:params") == 0.5 and frozen.constraints == {
        "params": 0.5
    }


def _tensorboard() -> bool:
    from ray.tune.logger import TBXLoggerCallback

    method = getattr(TBXLoggerCallback, "_try_log_hparams", None)
    return method is not None and list(inspect.signature(method).parameters)[1:] == [
        "trial",
        "result",
    ]


def _mlflow() -> bool:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    callback = MLflowLoggerCallback()
    return "_trial_runs" in inspect.getsource(MLflowLoggerCallback) and hasattr(
        callback.mlflow_util, "_get_client"
    )


def _generator() -> bool:
    from ray.tune.search.search_generator import SearchGenerator

    source = inspect.getsource(SearchGenerator.get_state)
    return all(f'"{k}"' in source for k in ("counter", "total_samples", "finished", "experiment"))


def _storage() -> bool:
    from ray.train._internal.storage import StorageContext

    return all(
        hasattr(StorageContext, n) for n in ("experiment_fs_path", "experiment_driver_staging_path")
    )


def _callback() -> bool:
    from ray.tune import Callback

    return callable(getattr(Callback, "get_state", None))


def _stop_signal() -> bool:
    from ray.tune import tune as tune_run
    from ray.tune.experiment import Trial

    source = inspect.getsource(tune_run._setup_signal_catching)
    return "SIGUSR1" in source and isinstance(inspect.getattr_static(Trial, "error_file"), property)
