"""Which hyperparameters mattered: Optuna's fANOVA over the leaderboard's trials.

Drawn by the importance plot; here because it builds an Optuna study, and
Optuna is reached from engine/ only.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
import optuna.distributions as d
import pandas as pd

from search.outputs.plots import searched_params, with_columns
from search.space import Param, Space


def parameter_importance(frame: pd.DataFrame, space: Space) -> tuple[dict[str, float], int]:
    """Optuna's fANOVA importances on a study rebuilt from the leaderboard.

    Each trial with a result enters as a finished trial valued at its best
    epoch. Only parameters that every such trial has are assessed (Optuna's
    rule), so a conditional one counts where its option was always chosen.

    Raises:
        ValueError: too few trials or no varied parameter (the message says which).
    """

    key = f"best_{space.trial.metric}"
    done = with_columns(frame, key)
    params = searched_params(space, frame)
    if len(done) < 2 or not params:
        raise ValueError(
            "needs at least 2 trials with a result and a searched parameter"
            f" (this sweep has {len(done)} trials with a result)"
        )
    if done[key].astype(float).nunique() < 2:
        raise ValueError(
            f"every trial with a result reached the same best {space.trial.metric}: "
            "there is no variation for the parameters to explain"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if space.trial.mode == "max" else "minimize")
    distributions = {p.column: _distribution(p) for p in params}
    for row in done.to_dict("records"):
        values = {}
        for column, distribution in distributions.items():
            value = _option(row.get(column), distribution)
            if value is not None:
                values[column] = value
        study.add_trial(
            optuna.trial.create_trial(
                params=values,
                distributions={c: distributions[c] for c in values},
                value=float(row[key]),
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        except RuntimeError as exc:  # fANOVA: "zero total variance in all trees"
            raise ValueError(f"fANOVA found nothing to attribute ({exc})") from None
    if not importances:
        raise ValueError("no parameter was set in every trial with a result")
    return dict(importances), len(done)


def _distribution(param: Param) -> Any:

    if param.kind == "choice":
        return d.CategoricalDistribution(list(param.values))
    if param.kind == "int":
        return d.IntDistribution(
            int(param.low), int(param.high), step=int(param.step or 1), log=param.log
        )
    log = param.log or param.kind == "loguniform"
    return d.FloatDistribution(param.low, param.high, step=None if log else param.step, log=log)


def _option(value: Any, distribution: Any) -> Any:
    """A leaderboard value as the distribution's own value; None where absent or outside."""

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(distribution, d.CategoricalDistribution):
        return next((c for c in distribution.choices if c == value or str(c) == str(value)), None)
    number = int(value) if isinstance(distribution, d.IntDistribution) else float(value)
    return number if distribution.low <= number <= distribution.high else None
