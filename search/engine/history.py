"""The Optuna study of a sweep as ftsweep's own JSON: what crosses a resume.

Ray saves a searcher by pickling it, and Optuna's samplers change their
pickled form between releases (a TPE sampler pickled under optuna 4.9 fails
to load under 5.0), so a sweep could not be resumed after an upgrade, and the
pickle would be code read from a results folder. Instead the searcher saves
every trial's parameters, distributions, intermediate values, final value,
state and attributes here (tune/searcher-state-S.json), and a resume rebuilds
the study with ``Study.add_trial`` and a new sampler built from the sweep's
``SamplerRecipe`` (engine/searcher.py): nothing of Optuna's internals is kept.

CMA-ES keeps its optimizer as a pickle in trial attributes: it is left out,
and a resumed CMA-ES search starts its distribution again from the history.
"""

from __future__ import annotations

import json
import math
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import FrozenTrial, TrialState

FORMAT = 1
_PICKLED_ATTRS = (":optimizer",)  # CMA-ES: "cma:optimizer:0", "sepcma:optimizer:1", ...


def trial_json(trial: FrozenTrial, ray_trial_id: str | None) -> dict[str, Any]:
    return {
        "ray_trial_id": ray_trial_id,
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": trial.params,
        "distributions": {
            name: json.loads(distribution_to_json(d)) for name, d in trial.distributions.items()
        },
        "intermediate_values": {str(k): v for k, v in trial.intermediate_values.items()},
        "user_attrs": trial.user_attrs,
        "system_attrs": {
            k: v for k, v in trial.system_attrs.items() if not any(p in k for p in _PICKLED_ATTRS)
        },
    }


def dumps(
    sampler: dict[str, Any],
    completed: set[str],
    trials: list[dict[str, Any]],
    study_system_attrs: dict[str, Any],
) -> str:
    return json.dumps(
        {
            "format": FORMAT,
            "sampler": sampler,
            "completed": sorted(completed),
            "study_system_attrs": study_system_attrs,
            "trials": trials,
        },
        indent=1,
    )


def loads(text: str) -> dict[str, Any]:
    """The saved history; ValueError where it is not one ftsweep wrote."""
    history = json.loads(text)
    if not isinstance(history, dict) or history.get("format") != FORMAT:
        raise ValueError(f"not an ftsweep search history of format {FORMAT}")
    return history


def frozen(saved: dict[str, Any], state: TrialState, value: float | None) -> FrozenTrial:
    """A finished trial to ``add_trial``, from its saved form."""
    if state == TrialState.COMPLETE and (value is None or math.isnan(value)):
        state, value = TrialState.FAIL, None
    return optuna.trial.create_trial(
        state=state,
        value=None if state == TrialState.FAIL else value,
        params=saved["params"],
        distributions={
            name: json_to_distribution(json.dumps(d)) for name, d in saved["distributions"].items()
        },
        intermediate_values={int(k): v for k, v in saved["intermediate_values"].items()},
        user_attrs=saved.get("user_attrs") or {},
        system_attrs=saved.get("system_attrs") or {},
    )
