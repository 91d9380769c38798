"""Interrupted sweeps resume exactly: SIGKILL of the driver's process group, and SIGINT."""

from __future__ import annotations

import os
import pickle
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ftsweep, reported_epochs, start_ftsweep, stop_group

pytestmark = pytest.mark.slow

MAX_EPOCHS = 5
SPACE = f"""
name: r
data: {{source: digits, image_size: 16}}
trial: {{max_epochs: {MAX_EPOCHS}, batch_size: 64, precision: fp32}}
search: {{num_samples: 4, max_concurrent: 2, seed: 3, scheduler: {{type: none}}}}
resources: {{cpus: 1}}
space:
  backbone: mobilenet_v3_small
  weights: none
  lr: {{loguniform: [1.0e-4, 1.0e-2]}}
  augmentation: {{choice: [none, light]}}
"""


def _interrupt_midway(tmp_path: Path, how: signal.Signals) -> tuple[Path, dict[str, list[int]]]:
    space = tmp_path / "r.yaml"
    space.write_text(SPACE)
    sweep = tmp_path / "results" / "r"
    driver = start_ftsweep("run", str(space), "--results", str(tmp_path / "results"))
    deadline = time.time() + 400
    try:
        while True:
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.time() < deadline, "never reached a finished and an unfinished trial"
            epochs = reported_epochs(sweep)
            done = [t for t, e in epochs.items() if max(e, default=0) == MAX_EPOCHS]
            partial = [t for t, e in epochs.items() if 2 <= max(e, default=0) < MAX_EPOCHS]
            if done and partial:
                break
            time.sleep(0.5)
        time.sleep(6)  # past one save of Ray's experiment state (TUNE_GLOBAL_CHECKPOINT_S=5)
        before = reported_epochs(sweep)
        if how == signal.SIGKILL:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=60)
        else:
            driver.send_signal(signal.SIGINT)
            _, err = driver.communicate(timeout=300)
            assert driver.returncode == 130, err[-3000:]
            assert f"ftsweep resume {sweep}" in err
    finally:
        stop_group(driver)
    time.sleep(3)  # let the killed Ray processes go
    return sweep, before


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_resume_after_interruption(tmp_path, how):
    sweep, before = _interrupt_midway(tmp_path, how)
    finished_before = {t for t, e in before.items() if max(e) == MAX_EPOCHS}

    damaged_trial = None
    if how == signal.SIGKILL:
        # A kill can cut a file short mid-write: damage Ray's experiment state
        # and an unfinished trial's newest checkpoint. The resume must repair
        # both (the state from its good copy, the trial from an earlier epoch).
        state = sorted((sweep / "tune").glob("experiment_state-*.json"))[-1]
        state.write_bytes(state.read_bytes()[:-100])
        damaged_trial = next(t for t, e in before.items() if max(e) < MAX_EPOCHS)
        newest = sorted((sweep / "tune" / damaged_trial).glob("checkpoint_*"))[-1]
        (newest / "state.pt").write_bytes((newest / "state.pt").read_bytes()[:1000])

    status = ftsweep("status", str(sweep))
    assert status.returncode == 0 and "resumable: yes" in status.stdout, status.stdout

    resume = start_ftsweep("resume", str(sweep))
    out, err = resume.communicate(timeout=600)
    assert resume.returncode == 0, err[-3000:]
    if damaged_trial:
        assert "experiment_state" in err and "resuming from the copy saved" in err, err[-3000:]
        assert state.with_name(state.name + ".damaged").is_file()

    board = pd.read_csv(sweep / "leaderboard.csv")
    assert len(board) == 4 and board["trial_id"].is_unique
    assert (board["status"] == "completed").all()
    assert board["lr"].is_unique  # no configuration was sampled twice
    after = reported_epochs(sweep)
    for trial in finished_before:  # finished trials untouched
        assert after[trial] == before[trial]
    continued = []
    for trial, epochs in before.items():
        if max(epochs) < MAX_EPOCHS:
            new = after[trial][len(epochs) :]
            assert sorted(set(after[trial])) == list(range(1, MAX_EPOCHS + 1))
            continued.append(new[0] > 1)  # resumed from a checkpoint, not from epoch 0
            if trial == damaged_trial:  # its newest checkpoint was damaged: an earlier one
                assert new[0] <= int(newest.name.rsplit("_", 1)[1]) + 1, (before, after)
    assert any(continued), (before, after)

    states = sorted((sweep / "tune").glob("searcher-state-*.pkl"))  # named by start time
    searcher = pickle.loads(states[-1].read_bytes())  # our own experiment's state
    history = searcher["_ot_study"].trials
    assert len(history) == 4
    assert all(t.state.is_finished() for t in history)
