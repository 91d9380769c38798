"""The trainable without Ray: reports every epoch, and resumes exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from trainables.data import make_split, write_split
from trainables.finetune import META_FILE, TrialSetup, load_state, train
from trainables.hparams import HParams


@pytest.fixture(scope="module")
def small_split(tmp_path_factory) -> Path:
    frame = make_split(None, "digits", val_fraction=0.15, test_fraction=0.15, seed=0)
    # a quarter of the data keeps this test fast
    frame = frame.groupby(["split", "label"], group_keys=False).head(12)
    path = tmp_path_factory.mktemp("split") / "split.csv"
    write_split(frame, path)
    return path


def _run(split: Path, epochs: int, keep: Path, state=None) -> list[dict]:
    setup = TrialSetup(str(split), None, image_size=16, max_epochs=epochs, batch_size=16)
    hparams = HParams(
        backbone="resnet18",
        lr=3e-3,
        augmentation="randaugment",
        lr_scheduler="cosine",
        warmup_epochs=1,
        head_hidden=16,
        head_dropout=0.1,
    )
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
