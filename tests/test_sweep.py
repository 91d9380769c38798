"""End to end, in process: a real sweep with Ray Tune, Optuna and ASHA."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from search import load_model, run_sweep
from search.leaderboard import build_leaderboard
from trainables.data import decode_split, read_split
from trainables.finetune import load_state
from trainables.models import build_model

pytestmark = pytest.mark.slow

# One good learning rate and a hopeless one: the first trial (good) and the
# second (hopeless) start together; the third (hopeless) reaches ASHA's first
# rung after both, below the cutoff, so ASHA must stop it.
SPACE = """
name: e2e
data: {source: digits, image_size: 16, val_fraction: 0.15, test_fraction: 0.15}
trial: {max_epochs: 2, batch_size: 32, metric: val_accuracy, precision: fp32}
search:
  num_samples: 4
  max_concurrent: 2
  sampler: tpe
  seed: 1
  start_from:
    - {lr: 3.0e-3, optimizer: adamw, head_hidden: 0, weight_decay: 1.0e-3}
    - {lr: 1.0e-7, optimizer: adamw}
    - {lr: 1.0e-7, optimizer: sgd}
  scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
resources: {cpus: 1}
space:
  backbone: resnet18
  weights: none
  head_hidden: {choice: [0, 32]}
  lr: {choice: [3.0e-3, 1.0e-7]}
  lr_scheduler: none
  augmentation: none
  optimizer:
    choice:
      adamw: {weight_decay: {loguniform: [1e-4, 1e-2]}}
      sgd: {momentum: {uniform: [0.8, 0.9]}}
"""


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sweep(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    space = root / "e2e.yaml"
    space.write_text(SPACE)
    return run_sweep(space, results=root / "results")


def test_leaderboard_has_one_row_per_trial(sweep):
    board = pd.read_csv(sweep.sweep_dir / "leaderboard.csv")
    assert len(board) == 4
    assert board["trial_id"].is_unique
    assert list(board["rank"]) == [1, 2, 3, 4]
    assert board["best_val_accuracy"].is_monotonic_decreasing
    for column in (
        "lr",
        "optimizer",
        "optimizer/weight_decay",
        "best_epoch",
        "epochs",
        "train_seconds",
        "params",
        "checkpoint",
        "last_val_loss",
        "status",
    ):
        assert column in board
    assert board.iloc[0]["best_val_accuracy"] > 0.5
    assert board.iloc[0]["lr"] == pytest.approx(3e-3)


def test_asha_stopped_a_trial_early(sweep):
    board = sweep.leaderboard
    stopped = board[board["status"] == "stopped_early"]
    assert len(stopped) >= 1
    assert (stopped["epochs"] < 2).all()
    assert (board[board["status"] == "completed"]["epochs"] == 2).all()


def test_trials_ran_concurrently(sweep):
    spans = sweep.leaderboard[["started_at", "ended_at"]].to_numpy()
    overlaps = [min(a[1], b[1]) - max(a[0], b[0]) for a, b in itertools.combinations(spans, 2)]
    assert max(overlaps) > 1.0  # seconds during which two trials trained at once


def test_conditional_parameters_only_when_chosen(sweep):
    for params in (sweep.sweep_dir / "tune").glob("trial_*/params.json"):
        config = json.loads(params.read_text())
        if config["optimizer"] == "adamw":
            assert "optimizer.adamw.weight_decay" in config
            assert not any(k.startswith("optimizer.sgd") for k in config)
        else:
            assert "optimizer.sgd.momentum" in config
            assert not any(k.startswith("optimizer.adamw") for k in config)
    board = sweep.leaderboard
    sgd = board[board["optimizer"] == "sgd"]
    assert len(sgd) >= 1 and sgd["optimizer/weight_decay"].isna().all()


def test_split_is_written_once_and_stratified(sweep):
    split = read_split(sweep.sweep_dir / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    assert len(split) == 1797


def test_best_model_predicts_like_its_checkpoint(sweep):
    best = sweep.leaderboard.iloc[0]
    model = load_model(sweep.best_dir)
    assert model.classes == [str(i) for i in range(10)]
    assert not model.training
    state = load_state(Path(best["checkpoint"]))
    reference = build_model("resnet18", 10, head_hidden=int(best["head_hidden"]), image_size=16)
    reference.load_state_dict(state["model"])
    reference.eval()
    _, sets = decode_split(read_split(sweep.sweep_dir / "split.csv"), None, 16)
    images = sets["test"].images[:64]
    expected = reference(
        (images.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ).softmax(1)
    assert torch.allclose(model.predict_proba(images), expected, atol=1e-5)
    assert model.predict(list(images[:3])) == [model.classes[i] for i in expected[:3].argmax(1)]
    metrics = json.loads((sweep.best_dir / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] == pytest.approx(best["best_val_accuracy"])
    assert "test" in metrics


def test_export_is_reproducible(sweep, tmp_path):
    from search import export_trial

    export_trial(sweep.sweep_dir, tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (
        sweep.best_dir / "model.safetensors"
    ).read_bytes()
    again = build_leaderboard(sweep.sweep_dir, finished=True)
    assert list(again["trial_id"]) == list(sweep.leaderboard["trial_id"])
