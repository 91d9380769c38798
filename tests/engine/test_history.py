"""Optuna's history crosses a resume as ftsweep's JSON, never as a pickle.

The accident: a sweep saved under one Optuna and resumed under another
(a TPE sampler pickled under optuna 4.9 does not load under 5.0). The
searcher pickles no Optuna object (Ray keeps it in tune/tuner.pkl) and saves
its study as JSON; a resume rebuilds the study from that JSON with a new
sampler. tests/fixtures/search-history-v1.json was saved by this code: a
later format must still read it.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import shutil
from pathlib import Path

import optuna
import pytest

from search.engine.searcher import DefineByRun, PruningOptunaSearch, SamplerRecipe
from search.space.loader import load_space

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "search-history-v1.json"
M, STEP, EPOCH = "val_accuracy", "training_iteration", "epoch"
SPACE = """
name: h
data: {source: digits, image_size: 16}
trial: {max_epochs: 3, batch_size: 32}
search: {num_samples: 8}
space:
  backbone: squeezenet1_1
  weights: none
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  augmentation: {choice: [none, light]}
"""
State = optuna.trial.TrialState


# start_from points, tried first in this order: the last is still waiting in _midway.
START = [{"lr": 0.001 * (i + 1), "augmentation": "none"} for i in range(5)]
START.append({"lr": 0.0095, "augmentation": "light"})


def _searcher(write_space, sampler: str = "tpe", start: list | None = None) -> PruningOptunaSearch:
    space = load_space(write_space(SPACE))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return PruningOptunaSearch(
        space=DefineByRun(space.params),
        metric=M,
        mode="max",
        sampler=SamplerRecipe(sampler, 3, 8),
        points_to_evaluate=start,
        max_epochs=3,
    )


def _report(searcher, trial_id: str, *values: float) -> None:
    for epoch, value in enumerate(values, start=1):
        searcher.on_trial_result(trial_id, {M: value, STEP: epoch, EPOCH: epoch})


def _midway(write_space, folder: Path) -> PruningOptunaSearch:
    """A search saved with a trial of each kind: complete, pruned (stopped by
    ASHA), errored, running with a result, running without one; a start_from
    point not yet tried is waiting."""
    searcher = _searcher(write_space, start=START)
    for trial_id in "abcde":
        assert searcher.suggest(trial_id)
    _report(searcher, "a", 0.5, 0.55, 0.6)
    searcher.on_trial_complete("a", {M: 0.6, STEP: 3, EPOCH: 3})
    _report(searcher, "b", 0.2)
    searcher.on_trial_complete("b", {M: 0.2, STEP: 1, EPOCH: 1})
    searcher.on_trial_complete("c", error=True)
    _report(searcher, "d", 0.4)
    searcher.save_to_dir(str(folder), "s1")
    return searcher


def _point(config: dict) -> dict:
    return {k: config[k] for k in ("lr", "augmentation")}


def _globals(data: bytes) -> set[str]:
    found: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            found.add(module)
            return super().find_class(module, name)

    Recorder(io.BytesIO(data)).load()
    return found


def test_no_optuna_object_is_pickled_and_the_study_comes_back(write_space, tmp_path):
    first = _midway(write_space, tmp_path)
    saved = json.loads((tmp_path / "searcher-state-s1.json").read_text())
    assert [t["state"] for t in saved["trials"]] == [
        "COMPLETE", "PRUNED", "FAIL", "RUNNING", "RUNNING", "WAITING",
    ]  # fmt: skip
    pickled = pickle.dumps(first)  # what tune/tuner.pkl holds
    assert not {m for m in _globals(pickled) if m.split(".")[0] in ("optuna", "numpy")}

    resumed = pickle.loads(pickled)  # as Tuner.restore reads tuner.pkl
    resumed.restore_from_dir(str(tmp_path))
    study = resumed._ot_study
    before = first._ot_study.trials
    assert [(t.state, t.params, t.value) for t in study.trials[:3]] == [
        (t.state, t.params, t.value) for t in before[:3]
    ]
    assert study.trials[3].state == State.WAITING  # the start_from point not yet tried
    assert study.trials[0].intermediate_values == {1: 0.5, 2: 0.55, 3: 0.6}
    # The two trials that were running end after the resume and join the study.
    _report(resumed, "d", 0.4, 0.45)
    resumed.on_trial_complete("d", {M: 0.7, STEP: 3, EPOCH: 3})
    resumed.on_trial_complete("e", {M: 0.3, STEP: 2, EPOCH: 2})  # stopped by ASHA
    ended = {t.params["lr"]: t for t in study.trials[4:]}
    d, e = before[3], before[4]
    assert ended[d.params["lr"]].state == State.COMPLETE and ended[d.params["lr"]].value == 0.7
    assert ended[d.params["lr"]].intermediate_values == {1: 0.4, 2: 0.45}
    assert ended[e.params["lr"]].state == State.PRUNED
    # The start_from point that was waiting is proposed next; then the sampler's own.
    assert _point(resumed.suggest("f")) == START[-1]
    assert resumed.suggest("g")["lr"] not in {t.params.get("lr") for t in before}


def test_a_restored_trial_is_told_once_though_ray_also_reports_its_end(
    write_space, tmp_path, caplog
):
    """Told at its last epoch (on_trial_result); Ray's on_trial_complete after
    that changes nothing and warns of nothing."""
    first = _midway(write_space, tmp_path)
    resumed = pickle.loads(pickle.dumps(first))
    resumed.restore_from_dir(str(tmp_path))
    _report(resumed, "d", 0.4, 0.45, 0.7)
    count = len(resumed._ot_study.trials)
    with caplog.at_level(logging.WARNING):
        resumed.on_trial_complete("d", {M: 0.7, STEP: 3, EPOCH: 3})
    assert len(resumed._ot_study.trials) == count
    assert "additional completion" not in caplog.text
    ended = [t for t in resumed._ot_study.trials if t.params == first._ot_study.trials[3].params]
    assert [(t.state, t.value) for t in ended] == [(State.COMPLETE, 0.7)]


def test_an_errored_trial_run_again_is_told_its_new_result(write_space, tmp_path):
    first = _midway(write_space, tmp_path)
    resumed = pickle.loads(pickle.dumps(first))
    resumed.restore_from_dir(str(tmp_path))
    failed = first._ot_study.trials[2]
    _report(resumed, "c", 0.3, 0.5)  # resume --retry-errored
    resumed.on_trial_complete("c", {M: 0.65, STEP: 3, EPOCH: 3})
    again = [t for t in resumed._ot_study.trials if t.params == failed.params]
    assert [t.state for t in again] == [State.FAIL, State.COMPLETE]
    assert again[-1].value == 0.65
    resumed.save_to_dir(str(tmp_path), "s2")
    saved = json.loads((tmp_path / "searcher-state-s2.json").read_text())
    assert "c" in saved["completed"]


@pytest.mark.parametrize("sampler", ["random", "qmc", "cmaes", "gp"])
def test_a_resumed_sampler_does_not_repeat_the_first_runs_points(write_space, tmp_path, sampler):
    if sampler == "cmaes":
        pytest.importorskip("cmaes")  # Optuna's CMA-ES needs it; not a dependency of ftsweep
    first = _searcher(write_space, sampler)
    tried = []
    for i in range(6):
        config = first.suggest(f"t{i}")
        tried.append(config["lr"])
        first.on_trial_complete(f"t{i}", {M: 0.1 * i, STEP: 3, EPOCH: 3})
    first.save_to_dir(str(tmp_path), "s1")
    resumed = pickle.loads(pickle.dumps(first))
    resumed.restore_from_dir(str(tmp_path))
    new = [resumed.suggest(f"n{i}")["lr"] for i in range(3)]
    assert not set(new) & set(tried)


def test_a_history_saved_by_an_earlier_ftsweep_still_resumes(write_space, tmp_path):
    shutil.copy(FIXTURE, tmp_path / "searcher-state-2026-12-05_08-00-00.json")
    resumed = pickle.loads(pickle.dumps(_searcher(write_space, start=START)))
    resumed.restore_from_dir(str(tmp_path))
    assert [t.state for t in resumed._ot_study.trials] == [
        State.COMPLETE, State.PRUNED, State.FAIL, State.WAITING,
    ]  # fmt: skip
    assert set(resumed._pending) == {"d", "e"}
    assert _point(resumed.suggest("f")) == START[-1]
