"""The command line: bad input exits 2 with one message and no traceback."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from search.cli import main
from tests.conftest import FAST, MINIMAL, ftsweep
from tests.engine.test_progress import read_events
from trainables.errors import UserError


def test_bad_input_exits_2_without_traceback(write_space):
    """In a real process: exit code 2, one paragraph naming the file, no traceback."""
    path = write_space("data: {source: digits}\nspace:\n  backbone: resnet_50\n")
    result = ftsweep("validate", str(path))
    assert result.returncode == 2, result.stderr
    assert "unknown backbone 'resnet_50'" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("space:\n  backbone: [resnet18\n", "YAML syntax error"),
        ("data: {path: /no/such/folder}\nspace:\n  backbone: resnet18\n", "/no/such/folder"),
        ("space:\n  backbone: resnet18\n  lr: {uniform: [0.1, 0.01]}\n", "reversed range"),
        ("space:\n  backbone: resnet18\n  learning_rate: 0.1\n", "unknown parameter"),
        ("space:\n  backbone: resnet18\n  head_hidden: wide\n", "takes an integer"),
        ("trial: {metric: top5}\nspace:\n  backbone: resnet18\n", "unknown metric 'top5'"),
    ],
)
def test_bad_space_in_process(write_space, capsys, text, words):
    source = "" if text.startswith("data:") else "data: {source: digits}\n"
    path = write_space(source + text)
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert words in captured.err and (
        str(path) in captured.err or "/no/such/folder" in captured.err
    )
    assert "Traceback" not in captured.err + captured.out


def test_empty_data_folder_stops_run_before_ray(write_space, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    path = write_space(f"data: {{path: {empty}}}\nspace:\n  backbone: resnet18\n")
    assert main(["run", str(path), "--results", str(tmp_path / "r")]) == 2
    assert "no class folders" in capsys.readouterr().err
    assert not (tmp_path / "r" / "space" / "tune").exists()


def test_validate_reports_space_and_data(write_space, capsys):
    assert main(["validate", str(write_space(MINIMAL))]) == 0
    out = capsys.readouterr().out
    assert "1797 images, 10 classes" in out and "resnet18 5" in out and "OK" in out


@pytest.mark.slow
def test_run_leaderboard_export_from_the_command_line(tmp_path, capsys, monkeypatch, ray_stops):
    """Every command in this process, as `ftsweep` runs them (it starts Ray, as
    `ftsweep run` does): a subprocess would import torch and start Ray again."""
    space = tmp_path / "cli.yaml"
    space.write_text(FAST.replace("max_epochs: 2", "max_epochs: 1"))
    results = tmp_path / "results"
    # MLflow's own folder store (MLflow 3 wants this opt-in for it).
    mlruns = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    code = main(
        [
            *("run", str(space), "--results", str(results), "--num-samples", "2"),
            *("--max-concurrent", "2", "--name", "cli", "--mlflow", mlruns),
        ]
    )
    run = capsys.readouterr()
    assert code == 0, run.err[-3000:]
    assert "best: trial" in run.out and str(results / "cli" / "best") in run.out
    board = pd.read_csv(results / "cli" / "leaderboard.csv")
    assert len(board) == 2 and (board["status"] == "completed").all()

    # The compact view, piped: events and counts, no control characters, no Ray tables.
    assert "\x1b" not in run.out and "\r" not in run.out
    assert "Trial status" not in run.out + run.err and "╭" not in run.out
    assert "sweep cli: 2 trials of up to 1 epochs" in run.out
    for trial_id in board["trial_id"]:
        assert re.search(rf"finished   {trial_id}  best val_accuracy \d\.\d{{4}}", run.out)
    # The first trial to end is announced; a tie does not announce the second.
    announced = re.findall(r"new best   (\w+)  val_accuracy (\d\.\d{4})", run.out)
    assert announced and {t for t, _ in announced} <= set(board["trial_id"])
    assert float(announced[-1][1]) == pytest.approx(board["best_val_accuracy"].max(), abs=1e-4)
    assert "2/2 trials done (2 completed, 0 stopped early, 0 errored) | 0 running" in run.out

    # Every trial's TensorBoard file holds its hyperparameters (HParams).
    for trial_id in board["trial_id"]:
        tags, hparams, _ = read_events(results / "cli" / "tune" / f"trial_{trial_id}")
        assert "ray/tune/best_val_accuracy" in tags and hparams["backbone"] == "squeezenet1_1"
    assert main(["tensorboard", str(results / "cli")]) == 0
    assert f"tensorboard --logdir {results / 'cli' / 'tune'}" in capsys.readouterr().out

    assert main(["run", str(space), "--results", str(results), "--name", "cli"]) == 2
    assert "already ran" in capsys.readouterr().err  # nothing overwritten

    for fmt in ("table", "csv", "markdown", "json"):
        assert main(["leaderboard", str(results / "cli"), "--format", fmt, "--top", "1"]) == 0
        assert board.iloc[0]["trial_id"] in capsys.readouterr().out
    second = board.iloc[1]["trial_id"]
    assert (
        main(["export", str(results / "cli"), "--trial", second, "--out", str(tmp_path / "m")]) == 0
    )
    assert (tmp_path / "m" / "model.safetensors").is_file()

    # A finished sweep grows by --add N trials; the earlier ones stay as they were.
    assert main(["status", str(results / "cli")]) == 0
    assert "--add N" in capsys.readouterr().out
    code = main(["resume", str(results / "cli"), "--add", "1"])
    added = capsys.readouterr()
    assert code == 0, added.err[-3000:]
    assert "resumed    2 trials so far" in added.out and "3/3 trials done" in added.out
    grown = pd.read_csv(results / "cli" / "leaderboard.csv")
    assert len(grown) == 3 and grown["trial_id"].is_unique
    assert (grown["status"] == "completed").all()
    kept = grown.set_index("trial_id").loc[board["trial_id"], "best_val_accuracy"]
    assert kept.tolist() == board["best_val_accuracy"].tolist()
    assert main(["status", str(results / "cli")]) == 0
    assert "3 trials planned" in capsys.readouterr().out
    state = sorted((results / "cli" / "tune").glob("searcher-state-*.json"))[-1]
    history = json.loads(state.read_text())["trials"]  # ftsweep's JSON, engine/history.py
    assert len(history) == 3  # the new trial was sampled with the first two in history
    assert [t["state"] for t in history] == ["COMPLETE"] * 3

    # MLflow: one run per trial (the resume logged to the URI the sweep ran with).
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlruns)
    experiment = client.get_experiment_by_name("cli")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(grown["trial_id"])
    for r in runs:
        assert r.data.params["backbone"] == "squeezenet1_1" and "val_accuracy" in r.data.metrics
        assert r.info.status == "FINISHED"

    # status --watch of a finished sweep shows it once and ends.
    assert main(["status", str(results / "cli"), "--watch", "0.1"]) == 0
    watched = capsys.readouterr().out
    assert watched.startswith("--- ") and watched.count("--- ") == 1 and "3 completed" in watched


def test_rerun_without_name_gets_a_fresh_folder(write_space, tmp_path):
    from search.sweep import prepare_sweep

    path = write_space(MINIMAL)
    results = tmp_path / "results"
    (results / "t" / "tune").mkdir(parents=True)
    (results / "t" / "keep.txt").write_text("earlier work")
    space, sweep_dir = prepare_sweep(path, results, {})
    assert sweep_dir == results / "t-2" and space.name == "t-2"
    assert (sweep_dir / "split.csv").is_file() and (sweep_dir / "space.yaml").is_file()
    assert (results / "t" / "keep.txt").read_text() == "earlier work"
    with pytest.raises(UserError, match="already ran"):
        prepare_sweep(path, results, {"name": "t"})
