"""A sweep keeps going through trial faults: a transient failure is retried from
its checkpoint, an out-of-memory trial is reported as such, the others are untouched."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from PIL import Image

from search.cli import main
from search.outputs.ray_files import error_line
from tests.conftest import reported_epochs
from trainables.faults import INJECT_ENV

SPACE = """
name: f
data: {source: digits, image_size: 16}
trial: {max_epochs: 3, batch_size: 64, precision: fp32, max_failures: 1}
search: {num_samples: 3, max_concurrent: 3, seed: 1, scheduler: {type: none}}
resources: {cpus: 1}
space:
  backbone: squeezenet1_1  # the fastest torchvision backbone to train on the CPU
  weights: none
  lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


@pytest.mark.slow
def test_a_sweep_whose_every_trial_errored_sends_word_and_exits_1(
    tmp_path, monkeypatch, capsys, ray_stops, notified
):
    """A real all-errored sweep (every trial out of memory as it starts) with --notify."""
    space = SPACE.replace("max_failures: 1", "max_failures: 0").replace(
        "num_samples: 3", "num_samples: 2"
    )
    (tmp_path / "f.yaml").write_text(space.replace("max_concurrent: 3", "max_concurrent: 2"))
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps([{"trial": n, "epoch": 0, "error": "oom"} for n in (0, 1)]))
    monkeypatch.setenv(INJECT_ENV, str(faults))  # before Ray starts: its workers inherit it
    url, documents = notified
    argv = ["run", str(tmp_path / "f.yaml"), "--results", str(tmp_path / "r"), "--notify", url]
    assert main(argv) == 1
    assert "every trial errored (2)" in capsys.readouterr().err
    (document,) = documents
    assert document["outcome"] == "all_errored" and document["trials"] == {"errored": 2}
    assert document["best"] is None and "all errored" in document["text"]


@pytest.mark.slow
def test_transient_failure_retries_from_checkpoint_and_oom_is_reported(
    tmp_path, monkeypatch, capsys, ray_stops
):
    """In this process, as `ftsweep run` and `resume` run (they start Ray here)."""
    (tmp_path / "f.yaml").write_text(SPACE)
    faults = tmp_path / "faults.json"
    faults.write_text(
        json.dumps(
            [
                {"trial": 0, "epoch": 2, "error": "transient", "times": 1},
                {"trial": 1, "epoch": 2, "error": "oom"},  # every time: it never fits
            ]
        )
    )
    monkeypatch.setenv(INJECT_ENV, str(faults))  # before Ray starts: its workers inherit it
    results = tmp_path / "results"
    code = main(["run", str(tmp_path / "f.yaml"), "--results", str(results)])
    assert code == 0, capsys.readouterr().err[-3000:]  # the sweep survives
    capsys.readouterr()

    sweep = results / "f"
    board = pd.read_csv(sweep / "leaderboard.csv").set_index("trial_id")
    # The faults' trial numbers are the order in which trials started.
    ids = (faults.parent / "faults.json.trials").read_text().split()
    assert sorted(ids) == sorted(board.index)
    flaky, oom, healthy = (board.loc[i] for i in ids)

    assert flaky["status"] == "completed" and flaky["failures"] == 1 and pd.isna(flaky["error"])
    epochs = reported_epochs(sweep)
    # Retried from its epoch-1 checkpoint: epoch 1 is not trained or reported again.
    assert epochs[f"trial_{ids[0]}"] == [1, 2, 3]

    assert oom["status"] == "errored" and oom["failures"] == 2  # tried, retried once
    assert epochs[f"trial_{ids[1]}"] == [1]  # its retry started from the epoch-1 checkpoint
    assert oom["error"].startswith("out of memory (squeezenet1_1, batch_size 64)")
    assert "\n" not in oom["error"]

    assert healthy["status"] == "completed" and healthy["failures"] == 0
    assert epochs[f"trial_{ids[2]}"] == [1, 2, 3]
    assert (sweep / "best" / "model.safetensors").is_file()
    for plot in (sweep / "plots").glob("*.png"):  # drawn with an errored trial among them
        with Image.open(plot) as image:
            assert image.size == (1080, 660)
    assert len(list((sweep / "plots").glob("*.png"))) == 5
    assert "1 errored" in (sweep / "report.md").read_text()

    # Optuna hears of the errored trial as failed, of the others as complete.
    def told() -> dict[str, str]:  # Ray trial id -> its last state in Optuna's history
        state = sorted((sweep / "tune").glob("searcher-state-*.json"))[-1]
        trials = json.loads(state.read_text())["trials"]
        return {t["ray_trial_id"]: t["state"] for t in trials}

    assert told() == {ids[0]: "COMPLETE", ids[1]: "FAIL", ids[2]: "COMPLETE"}

    assert main(["status", str(sweep)]) == 0
    status = capsys.readouterr().out
    assert "1 errored" in status and "out of memory" in status, status

    # With more memory (no fault any more), --retry-errored finishes it from its checkpoint.
    faults.write_text("[]")  # read at every epoch: the workers of this Ray keep the variable
    assert main(["resume", str(sweep), "--retry-errored"]) == 0, capsys.readouterr().err[-3000:]
    board = pd.read_csv(sweep / "leaderboard.csv").set_index("trial_id")
    assert (board["status"] == "completed").all() and board["error"].isna().all()
    again = reported_epochs(sweep)
    assert again[f"trial_{ids[1]}"] == [1, 2, 3]  # epoch 1 was not trained again
    assert again[f"trial_{ids[0]}"] == [1, 2, 3] and again[f"trial_{ids[2]}"] == [1, 2, 3]
    # Optuna's history now holds the retried trial's result (its FAIL kept, as an
    # earlier attempt, with no Ray trial of its own).
    assert told() == {ids[0]: "COMPLETE", ids[1]: "COMPLETE", ids[2]: "COMPLETE", None: "FAIL"}


BUDGET = """
name: b
data: {source: digits, image_size: 16}
trial: {max_epochs: 2, batch_size: 64, precision: fp32}
search:
  num_samples: 4
  max_concurrent: 1  # one after another: trial numbers follow start_from
  seed: 1
  time_budget: 25s
  start_from: [{lr: 3.0e-3}, {lr: 1.0e-7}]
  scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
resources: {cpus: 1}
space:
  backbone: squeezenet1_1
  weights: none
  lr: {choice: [3.0e-3, 1.0e-7]}
"""


@pytest.mark.slow
def test_trials_the_time_budget_cut_are_out_of_time_not_stopped_early(
    tmp_path, monkeypatch, capsys, ray_stops
):
    """Before, a trial the budget cut was "stopped early", as if ASHA had judged it.

    The first trial completes, ASHA stops the hopeless second at its first
    rung, the third stalls in its first epoch until the budget ends (Ray
    stops it without telling the callbacks), the fourth never starts.
    """
    (tmp_path / "b.yaml").write_text(BUDGET)
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps([{"trial": 2, "epoch": 1, "error": "stall", "seconds": 120}]))
    monkeypatch.setenv(INJECT_ENV, str(faults))
    code = main(["run", str(tmp_path / "b.yaml"), "--results", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    sweep = tmp_path / "r" / "b"
    ids = (faults.parent / "faults.json.trials").read_text().split()
    board = pd.read_csv(sweep / "leaderboard.csv").set_index("trial_id")
    assert list(board.loc[ids, "status"]) == ["completed", "stopped_early", "out_of_time"]
    assert json.loads((sweep / "tune" / "asha_stops.json").read_text()) == {ids[1]: 1}
    assert f"stopped    {ids[1]}  early by ASHA at epoch 1" in out
    assert f"cut short  {ids[2]}  by the time budget before its first epoch" in out
    assert "(1 completed, 1 stopped early, 1 cut by the time budget, 0 errored)" in out
    assert "1 out of time" in (sweep / "report.md").read_text()

    assert main(["status", str(sweep)]) == 0
    status = capsys.readouterr().out
    assert "1 completed, 1 stopped early, 1 out of time, 0 errored" in status, status
    assert "1 not started" in status
    args = ["leaderboard", str(sweep), "--status", "out_of_time", "--format", "csv"]
    assert main(args) == 0
    assert ids[2] in capsys.readouterr().out


def test_error_line_picks_the_last_failure():
    text = (
        "Failure # 1 (occurred at 2026-11-22_10-00-00)\n"
        "ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)\n"
        '  File "x.py", line 3, in f\n'
        "RuntimeError: injected transient fault at epoch 2\n"
        "Failure # 2 (occurred at 2026-11-22_10-01-00)\n"
        "ray::ImplicitFunc.train() (pid=2, ip=127.0.0.1)\n"
        "trainables.faults.TrialOutOfMemoryError: out of memory (resnet50, batch_size 256): "
        "CUDA out of memory. Tried to allocate 2.00 GiB\n"
    )
    assert error_line(text) == (
        "out of memory (resnet50, batch_size 256): CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    assert error_line("torch.OutOfMemoryError: CUDA out of memory.\n") == (
        "out of memory: CUDA out of memory."
    )
    assert error_line("ValueError: bad\n   \n") == "ValueError: bad"
    assert os.linesep not in error_line("something odd happened")
