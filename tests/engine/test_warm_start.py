"""search.warm_start: an earlier sweep's trials enter the new study before anything is sampled.

The earlier sweep here is its files as a sweep leaves them (space.yaml,
split.csv, leaderboard.csv); the end-to-end run is in
tests/sweeps/test_constraints.py.
"""

from __future__ import annotations

import shutil

import optuna
import pandas as pd
import pytest

from search.engine.searcher import DefineByRun, PruningOptunaSearch, SamplerRecipe
from search.engine.warm_start import warm_start
from search.space.loader import load_space
from trainables.errors import UserError

SPACE = """
name: {name}
data: {{source: digits, image_size: 16}}
trial: {{max_epochs: 4, batch_size: 32, metric: {metric}}}
search: {{num_samples: 8, seed: 0, warm_start: {old}}}
space:
  backbone: {{choice: [resnet18, squeezenet1_1]}}
  weights: none
  lr: {{loguniform: [1.0e-4, 1.0e-2]}}
  optimizer:
    choice:
      adamw: {{weight_decay: {{loguniform: [1.0e-5, 1.0e-1]}}}}
      sgd: {{momentum: {{uniform: [0.8, 0.95]}}}}
"""

ROWS = [  # what the earlier sweep's leaderboard.csv holds
    ("a", "completed", "resnet18", 3e-3, "adamw", 1e-3, None, 0.91, 4),
    ("b", "stopped_early", "squeezenet1_1", 2e-4, "sgd", None, 0.9, 0.42, 1),
    ("c", "completed", "squeezenet1_1", 5e-3, "sgd", None, 0.85, 0.88, 4),
    ("d", "completed", "resnet18", 5e-2, "adamw", 1e-3, None, 0.30, 4),  # lr outside
    ("e", "errored", "resnet18", 1e-3, "adamw", 1e-4, None, None, None),
    ("f", "completed", "mobilenet_v2", 1e-3, "adamw", 1e-4, None, 0.95, 4),  # not a choice
]
COLUMNS = ["trial_id", "status", "backbone", "lr", "optimizer", "optimizer/weight_decay",
           "optimizer/momentum", "last_val_accuracy", "epochs"]  # fmt: skip


def earlier_and_new(tmp_path, *, metric="val_accuracy", split="same"):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(parents=True)
    new.mkdir()
    (old / "space.yaml").write_text(SPACE.format(name="old", metric="val_accuracy", old="null"))
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    frame["best_val_accuracy"] = frame["last_val_accuracy"]
    frame.to_csv(old / "leaderboard.csv", index=False)
    pd.DataFrame({"path": ["x/1.png", "y/2.png"], "label": ["x", "y"],
                  "split": ["train", "val"]}).to_csv(old / "split.csv", index=False)  # fmt: skip
    shutil.copy(old / "split.csv", new / "split.csv")
    text = SPACE.format(name="new", metric=metric, old=old)
    if split == "any":
        text = text.replace("warm_start:", "warm_start_split: any, warm_start:")
    (tmp_path / "new.yaml").write_text(text)
    return load_space(tmp_path / "new.yaml"), new


def test_the_earlier_trials_inside_the_space_are_brought_with_their_values(tmp_path):
    space, new = earlier_and_new(tmp_path)
    found = warm_start(space, new)
    assert [t["user_attrs"]["warm_start_trial"] for t in found.trials] == ["a", "b", "c"]
    a, b, c = found.trials
    assert a["state"] == "COMPLETE" and a["value"] == 0.91
    assert a["params"] == {"backbone": "resnet18", "lr": 3e-3, "optimizer": "adamw",
                           "optimizer.adamw.weight_decay": 1e-3}  # fmt: skip
    assert b["state"] == "PRUNED" and b["intermediate_values"] == {"1": 0.42}
    assert c["params"]["optimizer.sgd.momentum"] == 0.85
    assert "optimizer.adamw.weight_decay" not in c["params"]  # the branch not taken
    assert found.skipped == {"outside the new space": 2, "errored (nothing learnt)": 1}
    assert "3 earlier trials brought in, 3 skipped" in found.line()


def test_the_study_holds_them_before_the_first_new_trial_and_tpe_proposes(tmp_path):
    space, new = earlier_and_new(tmp_path)
    found = warm_start(space, new)
    recipe = SamplerRecipe("tpe", 0, 8)  # TPE's start-up: min(10, max(3, 8 // 4)) = 3 trials
    assert recipe.build()._n_startup_trials <= len(found.trials)
    search = PruningOptunaSearch(
        space=DefineByRun(space.params),
        metric="val_accuracy",
        mode="max",
        sampler=recipe,
        max_epochs=4,
        points_to_evaluate=[{"backbone": "squeezenet1_1"}],
        warm=tuple(found.trials),
    )
    study = search._ot_study
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "COMPLETE", "WAITING"]
    assert [t.value for t in study.trials[:3]] == [0.91, None, 0.88]
    search.suggest("first")  # the start_from point, queued after the earlier trials
    random_draws = []
    sampler = study.sampler
    original = sampler._random_sampler.sample_independent
    sampler._random_sampler.sample_independent = lambda *a: random_draws.append(a) or original(*a)
    config = search.suggest("second")  # the first trial the sampler proposes
    assert config["backbone"] in ("resnet18", "squeezenet1_1")
    assert random_draws == []  # proposed by TPE from the earlier trials, not at random
    assert len(study.trials) == 5


def test_a_sweep_of_another_metric_or_split_is_refused_naming_the_file(tmp_path):
    space, new = earlier_and_new(tmp_path, metric="val_loss")
    with pytest.raises(UserError, match="optimised val_accuracy, this sweep val_loss") as error:
        warm_start(space, new)
    assert str(tmp_path / "old" / "space.yaml") in str(error.value)
    space, new = earlier_and_new(tmp_path / "2")
    (new / "split.csv").write_text("path,label,split\nx/1.png,x,val\ny/2.png,y,train\n")
    with pytest.raises(UserError, match="warm_start_split: any") as error:
        warm_start(space, new)
    assert "old/split.csv" in str(error.value)
    space, new = earlier_and_new(tmp_path / "3", split="any")
    (new / "split.csv").write_text("path,label,split\nx/1.png,x,val\ny/2.png,y,train\n")
    assert len(warm_start(space, new).trials) == 3
    space, new = earlier_and_new(tmp_path / "4")
    shutil.rmtree(tmp_path / "4" / "old")
    with pytest.raises(UserError, match="is not a finished ftsweep sweep"):
        warm_start(space, new)


def test_an_infeasible_earlier_trial_comes_with_its_constraints(tmp_path):
    space, new = earlier_and_new(tmp_path)
    board = pd.read_csv(tmp_path / "old" / "leaderboard.csv")
    board.loc[0, ["status", "last_val_accuracy", "best_val_accuracy", "epochs"]] = [
        "infeasible", None, None, 0]  # fmt: skip
    board["params"] = [11_689_512, 736_450, 736_450, 11_689_512, None, 2_236_682]
    board.to_csv(tmp_path / "old" / "leaderboard.csv", index=False)
    text = (tmp_path / "new.yaml").read_text()
    (tmp_path / "new.yaml").write_text(
        text.replace("seed: 0,", 'seed: 0, constraints: {params: "<= 3e6"},')
    )
    space = load_space(tmp_path / "new.yaml")
    first = warm_start(space, new).trials[0]
    assert first["state"] == "PRUNED" and first["value"] is None
    assert first["system_attrs"]["constraints:params"] > 0
    frozen = optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED,
        params={},
        distributions={},
        system_attrs=first["system_attrs"],
    )
    assert frozen.constraints["params"] > 0  # as Optuna reads it
