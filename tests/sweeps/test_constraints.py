"""search.constraints: a trial that breaks a limit on its model stops before any epoch.

Optuna is told (its constraints), the best, the finalists and best/ are
feasible trials only, and a sweep where no trial is feasible ends with exit 1.
"""

from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest

from search.cli import main
from search.engine.searcher import DefineByRun, PruningOptunaSearch, SamplerRecipe
from search.space.loader import load_space
from search.sweep import run_sweep
from tests.conftest import dead_url
from trainables.errors import UserError
from trainables.limits import INFEASIBLE, Limit

pytestmark = pytest.mark.slow

SPACE = """
name: limited
data: {source: digits, image_size: 16}
trial: {max_epochs: 1, batch_size: 64, precision: fp32}
search:
  num_samples: 3
  max_concurrent: 2
  finalists: 2
  seed: 0
  scheduler: {type: none}
  constraints: {params: "<= PARAMS"}
  start_from: [{backbone: resnet18}, {backbone: squeezenet1_1}]
resources: {cpus: 1}
space:
  backbone: {choice: [resnet18, squeezenet1_1]}
  weights: none
  augmentation: none
"""


@pytest.fixture(scope="module")
def limited(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("limited")
    space = root / "limited.yaml"
    space.write_text(SPACE.replace("PARAMS", "3e6"))
    return run_sweep(space, results=root / "results")


def test_an_oversized_backbone_stops_before_its_first_epoch(limited):
    result = limited
    board = result.leaderboard
    big = board[board["backbone"] == "resnet18"]
    small = board[board["backbone"] == "squeezenet1_1"]
    assert len(big) >= 1 and len(small) >= 1
    assert (big["status"] == "infeasible").all() and (big["epochs"] == 0).all()
    assert not big["feasible"].any() and small["feasible"].all()
    assert big["infeasible"].str.match(r"params 11,\d{3},\d{3} > 3e\+06").all()
    assert big["checkpoint"].isna().all()  # nothing trained, nothing saved
    assert (big["params"] > 3e6).all() and (big["latency_ms"] > 0).all()
    # Feasible trials first; the best, the finalists and best/ are feasible.
    assert list(board["feasible"]) == sorted(board["feasible"], reverse=True)
    finalists = json.loads((result.sweep_dir / "finalists.json").read_text())
    assert set(finalists) <= set(small["trial_id"])
    assert json.loads((result.best_dir / "model.json").read_text())["backbone"] == "squeezenet1_1"
    saved = pd.read_csv(result.sweep_dir / "leaderboard.csv")
    assert {"feasible", "infeasible"} <= set(saved.columns)
    # Optuna's study holds the oversized trial as infeasible.
    state = sorted((result.sweep_dir / "tune").glob("searcher-state-*.json"))[-1]
    trials = json.loads(state.read_text())["trials"]
    by_params = {
        t["params"]["backbone"]: t["system_attrs"].get("constraints:params") for t in trials
    }
    assert by_params["resnet18"] > 0 and by_params["squeezenet1_1"] <= 0
    assert {t["state"] for t in trials if t["params"]["backbone"] == "resnet18"} == {"PRUNED"}


def test_a_narrowed_space_warm_started_from_it_holds_its_trials_first(
    limited, tmp_path, capsys, notified
):
    """The next night: only the small backbone, warm-started from the first sweep."""
    narrowed = (
        SPACE.replace("PARAMS", "3e6")
        .replace("{choice: [resnet18, squeezenet1_1]}", "squeezenet1_1")
        .replace("  start_from: [{backbone: resnet18}, {backbone: squeezenet1_1}]\n", "")
    )
    space = tmp_path / "next.yaml"
    space.write_text(narrowed.replace("name: limited", "name: next"))
    url, documents = notified
    flags = ["--results", str(tmp_path / "results"), "--num-samples", "2", "--notify", url]
    assert main(["run", str(space), "--warm-start", str(limited.sweep_dir), *flags]) == 0
    first = capsys.readouterr().out.strip().splitlines()[0]
    board = limited.leaderboard
    small = (board["backbone"] == "squeezenet1_1").sum()
    assert first == (
        f"warm start from {limited.sweep_dir}: {small} earlier trials brought in, "
        f"{len(board) - small} skipped ({len(board) - small} outside the new space)"
    )
    state = sorted((tmp_path / "results" / "next" / "tune").glob("searcher-state-*.json"))[-1]
    trials = sorted(json.loads(state.read_text())["trials"], key=lambda t: t["number"])
    earlier = [t for t in trials if "warm_start_trial" in t["user_attrs"]]
    assert [t["number"] for t in earlier] == list(range(small))  # before any new trial
    values = dict(zip(board["trial_id"], board["last_val_accuracy"], strict=True))
    for trial in earlier:
        assert trial["value"] == pytest.approx(values[trial["user_attrs"]["warm_start_trial"]])
    assert len(trials) == small + 2 and all(t["ray_trial_id"] for t in trials[small:])
    (document,) = documents  # word at the end
    assert document["outcome"] == "completed" and document["sweep"] == "next"
    assert document["best"]["config"]["backbone"] == "squeezenet1_1"
    assert "accuracy" in document["best"]["test"] and document["trials"]["completed"] == 2


def test_a_sweep_with_nothing_feasible_exits_1_and_says_so(ray_session, tmp_path, capsys):
    space = tmp_path / "nothing.yaml"
    space.write_text(SPACE.replace("PARAMS", "1000").replace("num_samples: 3", "num_samples: 1"))
    dead = ["--notify", dead_url()]  # word cannot be sent: the exit code is still the sweep's
    assert main(["run", str(space), "--results", str(tmp_path / "results"), *dead]) == 1
    err = capsys.readouterr().err
    assert "no trial is within search.constraints" in err and "Traceback" not in err
    assert not (tmp_path / "results" / "limited" / "best").exists()


def _space(tmp_path, constraints: str):
    path = tmp_path / "s.yaml"
    path.write_text(SPACE.replace('{params: "<= PARAMS"}', constraints))
    return load_space(path)


@pytest.mark.parametrize(
    ("constraints", "words"),
    [
        ("{params: 5e6}", "write the limit as '<= NUMBER'"),
        ('{params: "< 5e6"}', "write the limit as '<= NUMBER'"),
        ('{flops: "<= 1e9"}', "'flops' cannot be limited; limit one of params"),
        ("[params]", "constraints"),
    ],
)
def test_a_bad_limit_names_its_key(tmp_path, constraints, words):
    with pytest.raises(UserError, match=words) as error:
        _space(tmp_path, constraints)
    assert "s.yaml" in str(error.value)


def test_limits_measure_how_far_off_a_trial_is(tmp_path):
    space = _space(tmp_path, '{latency_ms: "<= 8", throughput: ">= 500", val_accuracy: ">= 0.9"}')
    latency, throughput, accuracy = space.search.constraints
    assert latency.violation(4) < 0 < latency.violation(12) == pytest.approx(0.5)
    assert throughput.violation(600) < 0 < throughput.violation(250) == pytest.approx(0.5)
    assert accuracy.describe(0.8) == "val_accuracy 0.8 < 0.9"
    assert Limit.parse("params", "<= 5e6").describe(11_689_512) == "params 11,689,512 > 5e+06"


def test_tpe_proposes_fewer_models_that_break_a_limit(tmp_path):
    """The searcher's wiring alone (no Ray): infeasible trials told as such
    steer TPE away from the backbone that breaks the limit."""
    space = _space(tmp_path, '{params: "<= 3e6"}')
    search = PruningOptunaSearch(
        space=DefineByRun(space.params),
        metric="val_accuracy",
        mode="max",
        sampler=SamplerRecipe("tpe", 0, 40),
        max_epochs=1,
        limits=space.search.constraints,
    )
    rng = random.Random(0)
    chosen = []
    for number in range(40):
        config = search.suggest(f"t{number}")
        big = config["backbone"] == "resnet18"
        chosen.append(big)
        result = (
            {INFEASIBLE: "params too many", "params": 11.7e6, "epoch": 0,
             "val_accuracy": math.nan}
            if big
            else {"params": 1.2e6, "epoch": 1, "val_accuracy": 0.5 + 0.1 * rng.random()}
        )  # fmt: skip
        search.on_trial_complete(f"t{number}", result)
    study = search._ot_study
    infeasible = [t for t in study.trials if t.params["backbone"] == "resnet18"]
    assert infeasible and all(t.constraints["params"] > 0 for t in infeasible)
    assert all(t.state.name == "PRUNED" for t in infeasible)
    startup = sum(chosen[:10]) / 10  # TPE's random start-up
    learnt = sum(chosen[20:]) / 20
    assert learnt < startup and learnt <= 0.2, chosen


def test_validate_warns_where_no_backbone_can_meet_a_limit(tmp_path, capsys):
    space = tmp_path / "v.yaml"
    space.write_text(SPACE.replace("PARAMS", "3e6"))
    assert main(["validate", str(space), "--no-timing"]) == 0
    out = capsys.readouterr().out
    assert "warning: resnet18 11.2 M cannot meet search.constraints params <= 3e+06" in out
    assert "no backbone of the space" not in out
    space.write_text(SPACE.replace("PARAMS", "1000"))
    assert main(["validate", str(space), "--no-timing"]) == 0
    out = capsys.readouterr().out
    assert "warning: no backbone of the space can meet search.constraints params <= 1000" in out
    assert "resnet18 11.2 M, squeezenet1_1 0.7 M" in out
