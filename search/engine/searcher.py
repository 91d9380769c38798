"""The space as an Optuna define-by-run function, and the Optuna samplers."""

from __future__ import annotations

import glob
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import InMemoryStorage
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from search.engine import history
from search.space.params import Param
from trainables.hparams import EPOCH, METRICS
from trainables.limits import INFEASIBLE, MEASURED, Limit


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


STUDY = "ftsweep"  # the study's name in its in-memory storage
# How Optuna stores trial.set_constraint(KEY, v): system attribute "constraints:KEY"
# (written so for trials added frozen; checked at start-up, engine/probe.py).
CONSTRAINTS = "constraints"


@dataclass(frozen=True)
class SamplerRecipe:
    """How the sweep's sampler is built (build_sampler).

    ``offset`` shifts the seed: a resumed search gets a new sampler whose
    random draws do not repeat those of the first run.
    """

    name: str
    seed: int
    num_samples: int

    def build(self, offset: int = 0) -> optuna.samplers.BaseSampler:
        return build_sampler(self.name, self.seed + offset, self.num_samples)


class PruningOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about how a trial ended, and
    whose saved state is ftsweep's JSON (engine/history.py), never a pickle.

    A trial ASHA stopped before ``max_epochs`` is PRUNED (Optuna then uses its
    last reported value), not COMPLETE with a low-epoch score; an errored
    trial is FAIL.

    Pickled (Ray keeps the searcher in tune/tuner.pkl) it holds no Optuna
    object: the sampler is rebuilt from its ``SamplerRecipe``. Restored, the
    study is rebuilt from the saved history; the trials that were running
    are kept aside (``_pending``) and added to the study when they end, and
    an errored trial that ``resume --retry-errored`` runs again is added
    anew with its new result.
    """

    CKPT_FILE_TMPL = "searcher-state-{}.json"
    LEGACY_FILE_TMPL = "searcher-state-{}.pkl"  # sweeps from before: Ray's pickle

    def __init__(
        self,
        *args: Any,
        sampler: SamplerRecipe,
        max_epochs: int,
        limits: tuple[Limit, ...] = (),
        warm: tuple[dict[str, Any], ...] = (),
        **kwargs: Any,
    ) -> None:
        self._limits, self._warm = limits, warm  # read by _setup_study, called in __init__
        super().__init__(  # type: ignore[misc]
            *args, sampler=sampler.build(), storage=InMemoryStorage(), study_name=STUDY, **kwargs
        )
        self._recipe = sampler
        self._max_epochs = max_epochs
        self._pending: dict[str, dict[str, Any]] = {}  # Ray trial id -> its saved form
        self._ray_ids: dict[int, str] = {}  # Optuna trial number -> Ray trial id, restored
        self._seen: dict[str, dict[str, float]] = {}  # Ray trial id -> best of each metric

    def _setup_study(self, mode: str | list) -> None:
        """A new study: the warm start's earlier trials first (search.warm_start,
        engine/warm_start.py), then the start_from points, queued."""
        points, self._points_to_evaluate = self._points_to_evaluate, []
        try:
            super()._setup_study(mode)
        finally:
            self._points_to_evaluate = points
        assert self._ot_study is not None
        if not self._ot_study.trials:
            for saved in getattr(self, "_warm", ()):
                self._add(saved, optuna.trial.TrialState[saved["state"]], saved["value"], None)
        for point in points or []:
            self._ot_study.enqueue_trial(point)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(
            _sampler=None, _ot_study=None, _ot_trials={}, _pending={}, _ray_ids={}, _seen={}
        )
        state["_storage"] = None
        state["_completed_trials"] = set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_recipe" not in state:  # pickled before ftsweep saved JSON: Optuna's objects
            self._pending, self._ray_ids = {}, {}
            kind = type(self._sampler).__name__.removesuffix("Sampler").lower()
            name = {"tpe": "tpe", "random": "random", "gp": "gp", "cmaes": "cmaes", "qmc": "qmc"}
            self._recipe = SamplerRecipe(name.get(kind, "tpe"), 0, 16)  # for its next resume
            return
        self._sampler, self._storage = self._recipe.build(), InMemoryStorage()
        self._setup_study(self._mode or "max")  # a new search; a resume replaces it (restore)

    def save(self, checkpoint_path: str) -> None:
        assert self._ot_study is not None
        ids = {**self._ray_ids, **{t.number: rid for rid, t in self._ot_trials.items()}}
        trials = [
            history.trial_json(t, ids.get(t.number))
            for t in self._ot_study.get_trials(deepcopy=False)
        ]
        trials += [dict(saved, ray_trial_id=rid) for rid, saved in self._pending.items()]
        # The study's own attributes: QMC's count of the points it has drawn (a
        # sweep from before keeps its pickled study, in a storage of its own).
        storage, attrs = self._storage, {}
        if storage is not None:
            attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(STUDY))
        Path(checkpoint_path).write_text(
            history.dumps(asdict(self._recipe), self._completed_trials, trials, attrs)
        )

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        if not glob.glob(os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format("*"))):
            legacy = glob.glob(os.path.join(checkpoint_dir, self.LEGACY_FILE_TMPL.format("*")))
            if legacy:  # checked by outputs/trust.verify before the resume
                OptunaSearch.restore(self, max(legacy, key=os.path.getmtime))
                return
        super().restore_from_dir(checkpoint_dir)

    def restore(self, checkpoint_path: str) -> None:
        saved = history.loads(Path(checkpoint_path).read_text())
        trials = sorted(saved["trials"], key=lambda t: t["number"])
        self._sampler, self._storage = self._recipe.build(offset=len(trials)), InMemoryStorage()
        study = optuna.create_study(
            storage=self._storage,
            study_name=STUDY,
            sampler=self._sampler,
            pruner=optuna.pruners.NopPruner(),
            direction="minimize" if self._mode == "min" else "maximize",
        )
        study_id = self._storage.get_study_id_from_name(STUDY)
        for key, value in saved.get("study_system_attrs", {}).items():
            self._storage.set_study_system_attr(study_id, key, value)
        self._ot_study = study  # type: ignore[assignment]
        self._ot_trials, self._pending, self._ray_ids = {}, {}, {}
        for trial in trials:
            state, rid = optuna.trial.TrialState[trial["state"]], trial["ray_trial_id"]
            if state == optuna.trial.TrialState.WAITING:  # a start_from point not yet tried
                fixed = trial["system_attrs"].get("fixed_params") or trial["params"]
                study.enqueue_trial(fixed)
            elif state == optuna.trial.TrialState.RUNNING:
                if rid is not None:
                    self._pending[rid] = trial
            else:
                self._add(trial, state, trial["value"], rid)
        self._completed_trials = set(saved["completed"])

    def _add(
        self, saved: dict[str, Any], state: optuna.trial.TrialState, value: Any, rid: str | None
    ) -> None:
        assert self._ot_study is not None
        self._ot_study.add_trial(history.frozen(saved, state, value))
        if rid is not None:
            self._ray_ids[self._ot_study.trials[-1].number] = rid

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if INFEASIBLE in result:  # no epoch: nothing to report (told at its end)
            return
        self._remember(trial_id, result)
        if trial_id in self._completed_trials and trial_id in self._ray_ids.values():
            self._reopen(trial_id)  # an errored trial run again (resume --retry-errored)
        if trial_id in self._pending:
            step, value = result.get(TRAINING_ITERATION), result.get(self._metric)
            if step is not None and value is not None:
                self._pending[trial_id]["intermediate_values"].setdefault(str(step), value)
            if result.get(EPOCH, 0) >= self._max_epochs:
                # Told here: Ray does not call on_trial_complete for an errored
                # trial that resume --retry-errored ran to its end (Ray 2.60).
                self.on_trial_complete(trial_id, result)
            return
        # A trial resumed from its checkpoint reports an epoch Optuna has seen
        # when Ray saved the result before the checkpoint; Optuna keeps the first.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The reported value is ignored")
            super().on_trial_result(trial_id, result)

    def _reopen(self, trial_id: str) -> None:
        assert self._ot_study is not None
        number = next(n for n, rid in self._ray_ids.items() if rid == trial_id)
        trial = self._ot_study.trials[number]
        if trial.state != optuna.trial.TrialState.FAIL:
            return
        del self._ray_ids[number]  # the FAIL stays in the study; the new result is added
        self._completed_trials.discard(trial_id)
        again = dict(history.trial_json(trial, trial_id), intermediate_values={}, state="RUNNING")
        self._pending[trial_id] = again

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials and trial_id in self._ray_ids.values():
            return  # a restored trial, told at its last epoch (on_trial_result)
        stopped_early = (
            result is not None and result.get(EPOCH, self._max_epochs) < self._max_epochs
        )
        self._constrain(trial_id, result, error)
        if result is not None and INFEASIBLE in result and not error:
            self._infeasible(trial_id)
            return
        if trial_id in self._pending:
            value = None if error or not result else result.get(self._metric)
            state = optuna.trial.TrialState
            ended = state.FAIL if error else state.PRUNED if stopped_early else state.COMPLETE
            self._add(self._pending.pop(trial_id), ended, value, trial_id)
            self._completed_trials.add(trial_id)
            return
        if error or not stopped_early or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        assert self._ot_study is not None
        self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def _remember(self, trial_id: str, result: dict) -> None:
        """The best value of each limited metric so far (its limit is judged on it)."""
        seen = self._seen.setdefault(trial_id, {})
        for limit in getattr(self, "_limits", ()):
            value = result.get(limit.key)
            if limit.key in METRICS and isinstance(value, int | float) and not math.isnan(value):
                better = max if METRICS[limit.key] == "max" else min
                seen[limit.key] = better(seen.get(limit.key, value), value)

    def _constrain(self, trial_id: str, result: dict | None, error: bool) -> None:
        """Tells Optuna how far the trial is from each limit (<= 0: within), where
        known: its sampler then proposes fewer models that break one."""
        limits = getattr(self, "_limits", ())
        if not limits or error or result is None:
            return
        figures = {k: result[k] for k in MEASURED if isinstance(result.get(k), int | float)}
        figures |= self._seen.pop(trial_id, {})
        values = {
            limit.key: limit.violation(float(figures[limit.key]))
            for limit in limits
            if limit.key in figures and not math.isnan(figures[limit.key])
        }
        if trial_id in self._pending:  # a restored trial, added frozen: its saved form
            saved = self._pending[trial_id]["system_attrs"]
            saved.update({f"{CONSTRAINTS}:{key}": value for key, value in values.items()})
        elif trial_id in self._ot_trials and trial_id not in self._completed_trials:
            for key, value in values.items():
                self._ot_trials[trial_id].set_constraint(key, value)

    def _infeasible(self, trial_id: str) -> None:
        """A trial a limit stopped before its first epoch: PRUNED with no value,
        its constraints (set by _constrain) marking it infeasible."""
        assert self._ot_study is not None
        if trial_id in self._pending:
            self._add(self._pending.pop(trial_id), optuna.trial.TrialState.PRUNED, None, trial_id)
        elif trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)
