"""The model folder's safety, and the plots and report drawn from a results folder
with trials of every status (written here, without running a sweep)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

from search.engine.importance import parameter_importance
from search.model.export import load_model
from search.outputs.leaderboard import build_leaderboard, pareto_mask
from search.outputs.plots import PLOTS, plot_sweep
from search.outputs.report import write_report
from search.space.loader import load_space
from tests.conftest import model_folder
from trainables.errors import UserError


class _Exploit:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _model_folder(folder: Path) -> Path:
    return model_folder(folder, ["a", "b", "c"])


def test_a_malicious_pickle_in_a_model_folder_is_refused(tmp_path):
    from search.cli import main

    folder = _model_folder(tmp_path / "model")
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(marker))
    # Beside the real files, a pickle is never looked at.
    for name in ("pytorch_model.bin", "state.pt", "model.pkl"):
        (folder / name).write_bytes(payload)
    assert load_model(folder).classes == ["a", "b", "c"]
    # In place of the weights, it is refused, not unpickled.
    (folder / "model.safetensors").write_bytes(payload)
    with pytest.raises(UserError, match="not a valid safetensors file"):
        load_model(folder)
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20), "red").save(image)
    assert main(["predict", str(folder), str(image)]) == 2
    assert not marker.exists()


def test_a_damaged_model_json_is_a_clear_error(tmp_path, capsys):
    from search.cli import main

    folder = _model_folder(tmp_path / "model")
    (folder / "model.json").write_text('{"backbone": "resnet18"')
    with pytest.raises(UserError, match="model.json is damaged"):
        load_model(folder)
    assert main(["evaluate", str(tmp_path / "nothing"), str(tmp_path)]) == 2
    assert "not an exported model folder" in capsys.readouterr().err


SPACE = """
name: mixed
data: {source: digits, image_size: 16}
trial: {max_epochs: 4, batch_size: 32}
search: {num_samples: 8}
space:
  backbone: {choice: [resnet18, mobilenet_v3_small]}
  weights: none
  head_hidden: {choice: [0, 32]}
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  optimizer:
    choice:
      adamw: {weight_decay: {loguniform: [1.0e-4, 1.0e-2]}}
      sgd: {momentum: {uniform: [0.8, 0.9]}}
"""


def _trial(tune: Path, trial_id: str, config: dict, accuracies: list[float], **extra) -> None:
    folder = tune / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(config))
    lines = []
    for epoch, accuracy in enumerate(accuracies, 1):
        result = {
            "epoch": epoch,
            "val_accuracy": accuracy,
            "val_loss": 2.0 - accuracy,
            "train_loss": 2.1 - accuracy,
            "train_seconds": 3.0 * epoch,
            "started_at": 1_000.0 + 10 * len(trial_id),
            "timestamp": 1_000.0 + 10 * len(trial_id) + 3 * epoch,
            "params": 11_000_000 if config["backbone"] == "resnet18" else 1_500_000,
            "latency_ms": extra.get("latency", 5.0),
            "throughput": 900.0,
            "device": "cpu",
        }
        lines.append(json.dumps(result))
    (folder / "result.json").write_text("\n".join(lines) + ("\n" if lines else ""))
    if "error" in extra:
        (folder / "error.txt").write_text(f"Failure # 1\nRuntimeError: {extra['error']}\n")


@pytest.fixture
def mixed_sweep(tmp_path):
    """A results folder: 3 completed, 2 stopped early, 1 errored before an epoch, 1 with none."""
    sweep = tmp_path / "mixed"
    sweep.mkdir()
    (sweep / "space.yaml").write_text(SPACE.lstrip())
    (sweep / "split.csv").write_text(
        "path,label,split\n" + "".join(f"digits:{i},{i % 2},train\n" for i in range(6))
    )
    tune = sweep / "tune"
    adamw = {"optimizer": "adamw", "optimizer.adamw.weight_decay": 1e-3}
    sgd = {"optimizer": "sgd", "optimizer.sgd.momentum": 0.85}
    base = {"backbone": "resnet18", "weights": "none", "head_hidden": 0}
    _trial(tune, "a1", {**base, "lr": 1e-3, **adamw}, [0.5, 0.7, 0.8, 0.9], latency=6.0)
    _trial(tune, "b2", {**base, "lr": 3e-3, "head_hidden": 32, **sgd}, [0.4, 0.6, 0.7, 0.85])
    small = {**base, "backbone": "mobilenet_v3_small"}
    _trial(tune, "c3", {**small, "lr": 5e-3, **adamw}, [0.3, 0.5, 0.6, 0.8], latency=2.0)
    _trial(tune, "d4", {**small, "lr": 1e-4, **sgd}, [0.1], latency=2.5)
    _trial(tune, "e5", {**base, "lr": 2e-4, **adamw}, [0.2, 0.25], latency=6.5)
    _trial(tune, "f6", {**base, "lr": 1e-2, **adamw}, [], error="injected fault")
    return sweep


def test_plots_cover_every_trial_status(mixed_sweep):
    space = load_space(mixed_sweep / "space.yaml")
    frame = build_leaderboard(mixed_sweep, finished=True)
    assert sorted(frame["status"]) == sorted(
        ["completed"] * 3 + ["stopped_early"] * 2 + ["errored"]
    )
    paths = plot_sweep(mixed_sweep, frame, space)
    assert [p.name for p in paths] == [f"{name}.png" for name in PLOTS]
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (1080, 660), path.name
    importances, used = parameter_importance(frame, space)
    assert used == 5 and sum(importances.values()) == pytest.approx(1.0)
    assert set(importances) <= {"backbone", "head_hidden", "lr", "optimizer"}
    # accuracy/latency front: c3 (2.0 ms, 0.8) and a1 (6.0 ms, 0.9); b2 (5.0 ms, 0.85) too
    front = frame[pareto_mask(frame, "val_accuracy", "max")]
    assert sorted(front["trial_id"]) == ["a1", "b2", "c3"]
    report = write_report(mixed_sweep, frame, space).read_text()
    assert "3 completed, 2 stopped early, 1 errored" in report
    assert "Epochs trained: 15 of the 24" in report


def test_plots_of_a_sweep_without_results_say_so(tmp_path):
    sweep = tmp_path / "empty"
    (sweep / "tune").mkdir(parents=True)
    (sweep / "space.yaml").write_text(SPACE.lstrip())
    space = load_space(sweep / "space.yaml")
    frame = build_leaderboard(sweep)
    for path in plot_sweep(sweep, frame, space):
        with Image.open(path) as image:
            assert image.size == (1080, 660)
    assert "No trial has started yet" in write_report(sweep, frame, space).read_text()


def test_plots_when_every_trial_ties_and_when_one_plot_breaks(tmp_path, monkeypatch, caplog):
    """fANOVA has nothing to explain when every trial ties; one broken plot spares the others."""
    sweep = tmp_path / "tied"
    sweep.mkdir()
    (sweep / "space.yaml").write_text(SPACE.lstrip())
    adamw = {"optimizer": "adamw", "optimizer.adamw.weight_decay": 1e-3}
    base = {"backbone": "resnet18", "weights": "none", "head_hidden": 0, **adamw}
    for i, lr in enumerate([1e-3, 3e-3, 1e-2]):
        _trial(sweep / "tune", f"t{i}", {**base, "lr": lr}, [0.5, 0.9])
    space = load_space(sweep / "space.yaml")
    frame = build_leaderboard(sweep, finished=True)
    with pytest.raises(ValueError, match="same best val_accuracy"):
        parameter_importance(frame, space)
    monkeypatch.setattr("search.outputs.plots._curves", lambda *args: 1 / 0)
    paths = plot_sweep(sweep, frame, space)
    assert [p.name for p in paths] == [f"{name}.png" for name in PLOTS]
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (1080, 660), path.name
    assert "plot learning_curves failed" in caplog.text
