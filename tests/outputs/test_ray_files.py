"""Damaged state: a resume repairs it from the last good copy, or names the file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from search.outputs.ray_files import BACKUP_DIR, copy_newest_session, repair_state
from trainables.checkpoint_files import META_FILE, STATE_FILE
from trainables.checkpoints import load_resume_state
from trainables.errors import UserError

SESSION = "2026-11-22_10-00-00"
NAMES = (
    f"experiment_state-{SESSION}.json",
    f"searcher-state-{SESSION}.json",  # ftsweep's search history (engine/history.py)
    f"search_gen_state-{SESSION}.json",
)


def _save(folder: Path, trials: int) -> None:
    """One save as Ray writes it: JSON experiment state and search history, a pickle."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NAMES[0]).write_text(json.dumps({"trial_data": [["{}", "{}"]] * trials}))
    (folder / NAMES[1]).write_text(json.dumps({"format": 1, "trials": list(range(trials))}))
    (folder / NAMES[2]).write_bytes(pickle.dumps({"counter": trials}))


@pytest.fixture
def tune_dir(tmp_path) -> Path:
    tune = tmp_path / "tune"
    _save(tune, 3)
    (tune / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    staging = tmp_path / "staging"
    _save(staging, 3)
    copy_newest_session(staging, tune / BACKUP_DIR)  # what StateBackup does after a save
    return tune


def test_intact_state_is_left_alone(tune_dir):
    before = {p.name: p.read_bytes() for p in tune_dir.iterdir() if p.is_file()}
    assert repair_state(tune_dir) == []
    assert {p.name: p.read_bytes() for p in tune_dir.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(
    ("name", "damage", "words"),
    [
        (NAMES[0], "truncate", "cut short or corrupt (not valid JSON"),
        (NAMES[0], "delete", "missing"),
        (NAMES[1], "truncate", "cut short or corrupt (not valid JSON"),
        (NAMES[1], "delete", "missing"),
        (NAMES[2], "truncate", "an incomplete pickle"),
        (NAMES[2], "empty", "empty"),
    ],
)
def test_damaged_state_comes_back_from_the_good_copy(tune_dir, name, damage, words):
    target = tune_dir / name
    good = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        target.write_bytes(b"")
    else:
        target.unlink()
    lines = repair_state(tune_dir)
    assert len(lines) == 1 and name in lines[0] and words in lines[0]
    assert target.read_bytes() == good
    if damage != "delete":
        assert (tune_dir / f"{name}.damaged").is_file()  # kept for a post-mortem


def test_damaged_state_without_a_good_copy_names_the_file(tune_dir):
    (tune_dir / NAMES[0]).write_text('{"trial_data": [')
    (tune_dir / BACKUP_DIR / NAMES[0]).write_text('{"trial_data": [')
    with pytest.raises(UserError) as info:
        repair_state(tune_dir)
    assert str(tune_dir / NAMES[0]) in str(info.value) and "cut short" in str(info.value)
    assert (tune_dir / NAMES[0]).read_text() == '{"trial_data": ['  # nothing was touched


def test_damaged_tuner_file_is_named(tune_dir):
    data = (tune_dir / "tuner.pkl").read_bytes()
    (tune_dir / "tuner.pkl").write_bytes(data[:5])
    with pytest.raises(UserError, match=r"tuner\.pkl is cut short"):
        repair_state(tune_dir)


def _checkpoint(trial: Path, number: int, *, good: bool = True) -> None:
    folder = trial / f"checkpoint_{number:06d}"
    folder.mkdir(parents=True)
    torch.save({"epoch": number + 1, "weights": torch.ones(3)}, folder / STATE_FILE)
    (folder / META_FILE).write_text(json.dumps({"epoch": number + 1, "val_accuracy": 0.5}))
    if not good:
        data = (folder / STATE_FILE).read_bytes()
        (folder / STATE_FILE).write_bytes(data[: len(data) // 2])


def test_damaged_checkpoint_falls_back_to_the_newest_good_one(tmp_path, caplog):
    trial = tmp_path / "trial_x"
    for number, good in ((0, True), (1, True), (2, False), (3, False)):
        _checkpoint(trial, number, good=good)
    state, unreported = load_resume_state(trial / "checkpoint_000001")
    assert state["epoch"] == 2 and unreported is None  # intact: itself, no report needed
    state, unreported = load_resume_state(trial / "checkpoint_000003")
    assert state["epoch"] == 2 and unreported is None  # checkpoint_000002 is damaged too
    assert "checkpoint_000003/state.pt cannot be read" in caplog.text
    assert "continuing from the earlier checkpoint_000001" in caplog.text
    # A checkpoint folder that vanished: the same.
    assert load_resume_state(trial / "checkpoint_000009")[0]["epoch"] == 2


def test_no_readable_checkpoint_fails_the_trial_naming_the_file(tmp_path):
    trial = tmp_path / "trial_y"
    _checkpoint(trial, 0, good=False)
    with pytest.raises(RuntimeError, match=r"checkpoint_000000/state.pt cannot be read.*cannot"):
        load_resume_state(trial / "checkpoint_000000")


def test_with_no_earlier_checkpoint_a_later_one_is_used(tmp_path, caplog):
    # Ray's saved state lagged behind a kill: it points at checkpoint_000001,
    # which is damaged, and checkpoint_000000 was already deleted (num_to_keep).
    trial = tmp_path / "trial_z"
    _checkpoint(trial, 1, good=False)
    _checkpoint(trial, 2, good=True)
    state, unreported = load_resume_state(trial / "checkpoint_000001")
    assert state["epoch"] == 3
    assert "continuing from the later checkpoint_000002" in caplog.text
    # The driver may have been killed before it recorded epoch 3: the trial
    # reports it again from what the checkpoint was saved with.
    assert unreported == {"epoch": 3, "val_accuracy": 0.5}
