"""The trainable without Ray: reports every epoch, and resumes exactly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from trainables.checkpoint_files import META_FILE
from trainables.checkpoints import load_state
from trainables.data import decode_split, make_split, read_split, write_split
from trainables.finetune import TrialSetup, train
from trainables.hparams import HParams
from trainables.loop import evaluate
from trainables.models import build_model
from trainables.weights import inference_weights


@pytest.fixture(scope="module")
def small_split(tmp_path_factory) -> Path:
    frame = make_split(None, "digits", val_fraction=0.15, test_fraction=0.15, seed=0)
    # a quarter of the data keeps this test fast
    frame = frame.groupby(["split", "label"], group_keys=False).head(12)
    path = tmp_path_factory.mktemp("split") / "split.csv"
    write_split(frame, path)
    return path


BASE = {
    "backbone": "resnet18",
    "lr": 3e-3,
    "augmentation": "randaugment",
    "lr_scheduler": "cosine",
    "warmup_epochs": 1,
    "head_hidden": 16,
    "head_dropout": 0.1,
}


def _run(split: Path, epochs: int, keep: Path, state=None, **changes) -> list[dict]:
    setup = TrialSetup(str(split), None, image_size=16, max_epochs=epochs, batch_size=16)
    hparams = HParams(**{**BASE, **changes})
    reports = []

    def report(metrics, directory: Path):
        reports.append(metrics)
        shutil.copytree(directory, keep / f"epoch{metrics['epoch']}")

    train(hparams, setup, report=report, state=state)
    return reports


def test_resume_from_checkpoint_matches_uninterrupted_run(small_split, tmp_path):
    straight = _run(small_split, 3, tmp_path / "a")
    assert [r["epoch"] for r in straight] == [1, 2, 3]
    assert {"val_loss", "val_accuracy", "val_f1_macro", "train_loss", "train_seconds"} <= set(
        straight[0]
    )
    assert (tmp_path / "a" / "epoch2" / META_FILE).is_file()
    state = load_state(tmp_path / "a" / "epoch1")
    assert state["epoch"] == 1
    resumed = _run(small_split, 3, tmp_path / "b", state=state)
    assert [r["epoch"] for r in resumed] == [2, 3]  # continues, not from epoch 0
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert resumed[-1][key] == pytest.approx(straight[-1][key], rel=1e-5), key
    final_a = load_state(tmp_path / "a" / "epoch3")["model"]
    final_b = load_state(tmp_path / "b" / "epoch3")["model"]
    assert all(torch.allclose(final_a[k].float(), final_b[k].float(), atol=1e-6) for k in final_a)


def test_unfreeze_at_ema_mixing_and_clipping_train_and_resume_exactly(small_split, tmp_path):
    """frozen_depth 2 with unfreeze_at 2, EMA, MixUp + CutMix and gradient clipping."""
    changes = {
        "frozen_depth": 2,
        "unfreeze_at": 2,
        "unfrozen_lr_mult": 0.5,
        "backbone_lr_mult": 0.2,
        "ema": 0.9,
        "mixup_alpha": 0.2,
        "cutmix_alpha": 1.0,
        "grad_clip": 1.0,
    }
    straight = _run(small_split, 3, tmp_path / "a", **changes)
    first, second = (load_state(tmp_path / "a" / f"epoch{e}") for e in (1, 2))
    frozen = ["backbone.conv1.weight", "backbone.layer1.0.conv1.weight"]
    stats = ["backbone.bn1.running_mean", "backbone.layer1.1.bn2.running_var"]
    # Epoch 1: the stem and layer1 neither moved nor updated their BatchNorm statistics
    # (fresh BatchNorm holds zeros and ones) and have no optimizer state yet.
    assert torch.equal(first["model"][stats[0]], torch.zeros(64))
    assert torch.equal(first["model"][stats[1]], torch.ones(64))
    groups = {g["name"]: g for g in first["optimizer"]["param_groups"]}
    unfrozen_ids = set(groups["unfrozen"]["params"] + groups["unfrozen_no_decay"]["params"])
    assert not unfrozen_ids & set(first["optimizer"]["state"])
    assert groups["unfrozen"]["initial_lr"] == pytest.approx(3e-3 * 0.2 * 0.5)
    # Epoch 2 on: they train, with state of their own.
    assert unfrozen_ids <= set(second["optimizer"]["state"])
    for name in frozen:
        assert not torch.equal(first["model"][name], second["model"][name]), name
    assert not torch.equal(second["model"][stats[0]], torch.zeros(64))
    # EMA: kept in the checkpoint, one update per step, and what was evaluated.
    train_rows = int((read_split(small_split)["split"] == "train").sum())
    assert second["ema"]["updates"] == 2 * (train_rows // 16)  # full batches of 16 per epoch
    averaged = inference_weights(second)
    assert not torch.equal(averaged["head.3.weight"], second["model"]["head.3.weight"])
    classes, sets = decode_split(read_split(small_split), None, 16)
    network = build_model("resnet18", len(classes), head_hidden=16, image_size=16)
    network.load_state_dict(averaged)
    val = sets["val"]
    scores = evaluate(network, val.images, val.labels, torch.device("cpu"))
    assert scores["accuracy"] == pytest.approx(straight[1]["val_accuracy"])
    assert scores["loss"] == pytest.approx(straight[1]["val_loss"], rel=1e-5)
    # Resuming after epoch 1 (before the unfreeze) ends where the straight run did.
    resumed = _run(small_split, 3, tmp_path / "b", state=first, **changes)
    assert [r["epoch"] for r in resumed] == [2, 3]
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert resumed[-1][key] == pytest.approx(straight[-1][key], rel=1e-5), key
    final_a = load_state(tmp_path / "a" / "epoch3")
    final_b = load_state(tmp_path / "b" / "epoch3")
    for part in ("model",):
        for k, v in final_a[part].items():
            assert torch.allclose(v.float(), final_b[part][k].float(), atol=1e-6), k
    for k, v in final_a["ema"]["model"].items():
        assert torch.allclose(v.float(), final_b["ema"]["model"][k].float(), atol=1e-6), k


def test_out_of_memory_is_named_and_its_tensors_freed(small_split, monkeypatch):
    """An OOM mid-epoch becomes TrialOutOfMemoryError after the model is released."""
    import weakref

    from trainables import finetune
    from trainables.faults import TrialOutOfMemoryError

    models = []
    real_build = finetune.build_model

    def build_model(*args, **kwargs):
        model = real_build(*args, **kwargs)
        models.append(weakref.ref(model))
        return model

    def train_epoch(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(finetune, "build_model", build_model)
    monkeypatch.setattr(finetune, "train_epoch", train_epoch)
    setup = TrialSetup(str(small_split), None, image_size=16, max_epochs=2, batch_size=16)
    with pytest.raises(TrialOutOfMemoryError) as caught:
        finetune.fit_trial(HParams(backbone="resnet18"), setup, report=lambda *_: None)
    message = str(caught.value)
    assert message.startswith("out of memory (resnet18, batch_size 16): CUDA out of memory")
    assert "batch_size" in message.split("--")[1]  # says what to change
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    assert models and models[0]() is None  # nothing holds the model any more


def test_injected_faults_fire_as_often_as_asked(tmp_path, monkeypatch):
    import json

    from trainables.faults import INJECT_ENV, maybe_inject

    spec = tmp_path / "faults.json"
    spec.write_text(
        json.dumps(
            [
                {"trial": 0, "epoch": 2, "error": "transient", "times": 1},
                {"trial": 1, "epoch": 1, "error": "oom"},
            ]
        )
    )
    maybe_inject("first", 2)  # not set: nothing happens
    monkeypatch.setenv(INJECT_ENV, str(spec))
    for trial in ("first", "second", "third"):  # numbered in the order they start
        maybe_inject(trial, 0)
    maybe_inject("first", 1)
    maybe_inject("third", 2)
    with pytest.raises(RuntimeError, match="injected transient fault at epoch 2"):
        maybe_inject("first", 2)
    maybe_inject("first", 2)  # fired once already
    for _ in range(2):
        with pytest.raises(torch.OutOfMemoryError):
            maybe_inject("second", 1)


def test_measure_speed_changes_nothing_in_the_model():
    from trainables.loop import measure_speed
    from trainables.models import build_model

    model = build_model("resnet18", 3, image_size=16).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    latency_ms, throughput = measure_speed(
        model, 16, torch.device("cpu"), batch_size=8, min_seconds=0.01, max_seconds=0.1
    )
    assert latency_ms > 0 and throughput > 0
    assert model.training  # given back in the mode it came in
    assert torch.equal(torch.get_rng_state(), rng)  # training's random draws are untouched
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm stats too


def test_a_trial_resumed_from_a_later_checkpoint_reports_its_epoch_again(
    small_split, tmp_path, monkeypatch
):
    """Killed after a worker saved epoch 2's checkpoint and before the driver
    recorded it; Ray's (older) state points at epoch 1's, since deleted. The
    trial continues from epoch 2's and reports it first, so no epoch is missing
    from its results, the scheduler's or the searcher's."""
    import ray
    from ray import tune

    from trainables.finetune import tune_trainable

    trial = tmp_path / "trial_x"
    straight = _run(small_split, 2, trial, backbone="squeezenet1_1")
    (trial / "epoch2").rename(trial / "checkpoint_000001")
    shutil.rmtree(trial / "epoch1")  # Ray's num_to_keep deleted it
    reports = []
    monkeypatch.setattr(
        tune, "get_checkpoint", lambda: tune.Checkpoint(str(trial / "checkpoint_000000"))
    )
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    monkeypatch.setattr(tune, "get_context", _Context)
    monkeypatch.setattr(ray, "get_runtime_context", _Context)
    setup = TrialSetup(str(small_split), None, image_size=16, max_epochs=2, batch_size=16)
    tune_trainable({}, setup=setup, resolve=lambda _: {**BASE, "backbone": "squeezenet1_1"})
    assert [r["epoch"] for r in reports] == [2]  # trained no further: max_epochs is 2
    assert reports[0]["val_accuracy"] == straight[-1]["val_accuracy"]
    assert reports[0]["node_id"] == "node-a"


class _Context:
    """Ray's train context and runtime context, as far as the trainable asks."""

    def get_trial_id(self) -> str:
        return "x"

    def get_node_id(self) -> str:
        return "node-a"


def test_a_worker_waits_long_enough_for_a_stopped_trial_before_reusing_itself(monkeypatch):
    """Ray's 2 s wait for a stopped trial's thread was too short on a loaded
    machine: the next trial then errored ("Could not re-use actor")."""
    from ray import tune

    from trainables import finetune

    class Reached(Exception):
        pass

    def context():
        raise Reached

    monkeypatch.delenv(finetune.THREAD_TIMEOUT_ENV, raising=False)
    monkeypatch.setattr(tune, "get_context", context)
    with pytest.raises(Reached):
        finetune.tune_trainable({}, setup=None, resolve=dict)  # type: ignore[arg-type]
    assert int(os.environ[finetune.THREAD_TIMEOUT_ENV]) >= 60
    monkeypatch.setenv(finetune.THREAD_TIMEOUT_ENV, "5")  # a user's own setting is kept
    with pytest.raises(Reached):
        finetune.tune_trainable({}, setup=None, resolve=dict)  # type: ignore[arg-type]
    assert os.environ[finetune.THREAD_TIMEOUT_ENV] == "5"
