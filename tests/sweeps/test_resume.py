"""Interrupted sweeps resume exactly: SIGKILL of the driver's process group, and SIGINT."""

from __future__ import annotations

import io
import os
import pickle
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from search.outputs.status import watch
from tests.conftest import (
    midway,
    reported_epochs,
    saved_progress,
    start_ftsweep,
    stop_group,
)

pytestmark = pytest.mark.slow

MAX_EPOCHS = 4
SPACE = f"""
name: r
data: {{source: digits, image_size: 16}}
trial: {{max_epochs: {MAX_EPOCHS}, batch_size: 64, precision: fp32}}
search: {{num_samples: 4, max_concurrent: 2, seed: 3, scheduler: {{type: none}}}}
resources: {{cpus: 1}}
space:
  backbone: squeezenet1_1  # the fastest torchvision backbone to train on the CPU
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
        while not midway(sweep, MAX_EPOCHS):
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.time() < deadline, "never reached a finished and an unfinished trial"
            time.sleep(0.25)
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
    # What Ray saved last is what it resumes from: its finished trials must
    # stay as they are, its running ones continue from their checkpoints.
    saved = saved_progress(sweep)
    finished_before = {f"trial_{t}" for t, (s, _) in saved.items() if s == "TERMINATED"}
    running = {f"trial_{t}": e for t, (s, e) in saved.items() if s != "TERMINATED" and e >= 1}
    assert finished_before and running, saved

    damaged_trial = None
    if how == signal.SIGKILL:
        # A kill can cut a file short mid-write: damage Ray's experiment state
        # and an unfinished trial's newest checkpoint. The resume must repair
        # both (the state from its good copy, the trial from an earlier epoch).
        state = sorted((sweep / "tune").glob("experiment_state-*.json"))[-1]
        state.write_bytes(state.read_bytes()[:-100])
        damaged_trial = max(running, key=running.__getitem__)  # the one with most epochs
        assert running[damaged_trial] >= 2, saved  # so that an earlier checkpoint exists
        # The checkpoint Ray restores it from (one per epoch, numbered from 0).
        restored = sweep / "tune" / damaged_trial / f"checkpoint_{running[damaged_trial] - 1:06d}"
        (restored / "state.pt").write_bytes((restored / "state.pt").read_bytes()[:1000])

    # status --watch from another terminal: an unfinished sweep is shown again
    # and again (here two views), one after the other in a pipe.
    views = io.StringIO()
    watch(str(sweep), interval=0.1, out=views, refreshes=2)
    shown = views.getvalue()
    assert shown.count("--- ") == 2 and shown.count("resumable: yes") == 2, shown
    assert "\x1b" not in shown and "running: trial " in shown

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
    for trial, epoch in running.items():
        assert sorted(set(after[trial])) == list(range(1, MAX_EPOCHS + 1))
        # Ray's saved state, not the snapshot taken before the signal, says where
        # it resumes: a trial may report once more while the driver shuts down.
        new = after[trial][epoch:]
        if trial == damaged_trial:  # its checkpoint was damaged: another one, never epoch 0
            assert new[0] > 1, (saved, before, after)
        else:  # from its checkpoint, not from epoch 0: the counter never restarts at 1
            # Under load, Ray can save a RUNNING trial's last result a moment
            # before it registers that epoch's checkpoint (seen once after SIGINT
            # on a loaded machine): it then resumes from the checkpoint before.
            assert new[0] in (epoch, epoch + 1), (saved, before, after)

    states = sorted((sweep / "tune").glob("searcher-state-*.pkl"))  # named by start time
    searcher = pickle.loads(states[-1].read_bytes())  # our own experiment's state
    history = searcher["_ot_study"].trials
    assert len(history) == 4
    assert all(t.state.is_finished() for t in history)
