"""Interrupted sweeps resume exactly.

One sweep serves every interruption: started from the command line and
stopped with Ctrl-C (SIGINT) halfway, resumed from the command line and that
driver's process group killed (SIGKILL) halfway again, with files cut short
as a kill can leave them, then resumed in this process to the end.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from search.cli import main
from search.outputs.status import watch
from tests.conftest import (
    reported_epochs,
    saved_progress,
    start_ftsweep,
    stop_group,
)

pytestmark = pytest.mark.slow

MAX_EPOCHS = 6
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


def _midway(sweep: Path, since: dict[str, tuple[str, int]]) -> bool:
    """Ray's saved state has a finished trial and one running at least two
    epochs from its end (so that it is still unfinished when the test
    interrupts the sweep a moment later), which has moved on from ``since``."""
    progress = saved_progress(sweep)
    finished = any(s == "TERMINATED" and e == MAX_EPOCHS for s, e in progress.values())
    running = any(
        s == "RUNNING" and 2 <= e <= MAX_EPOCHS - 2 and since.get(t) != (s, e)
        for t, (s, e) in progress.items()
    )
    return finished and running


def _wait_midway(driver, sweep: Path, since: dict[str, tuple[str, int]], capsys) -> None:
    deadline = time.time() + 400
    shown_live = False
    while not _midway(sweep, since):
        assert driver.poll() is None, driver.communicate()[1][-3000:]
        assert time.time() < deadline, "never reached a finished and an unfinished trial"
        if not shown_live and any(reported_epochs(sweep).values()):
            # The leaderboard is readable while the sweep runs.
            assert main(["leaderboard", str(sweep), "--format", "csv"]) == 0
            live = pd.read_csv(io.StringIO(capsys.readouterr().out))
            assert "running" in set(live["status"]) and live["best_val_accuracy"].notna().any()
            shown_live = True
        time.sleep(0.25)


def _split(progress: dict[str, tuple[str, int]]) -> tuple[set[str], dict[str, int]]:
    """(finished trial folders, running trial folder -> its saved epoch)."""
    finished = {f"trial_{t}" for t, (s, _) in progress.items() if s == "TERMINATED"}
    running = {f"trial_{t}": e for t, (s, e) in progress.items() if s != "TERMINATED" and e >= 1}
    return finished, running


def test_sigint_then_sigkill_then_resume_to_the_end(tmp_path, capsys, caplog):
    space = tmp_path / "r.yaml"
    space.write_text(SPACE)
    sweep = tmp_path / "results" / "r"

    # 1. Ctrl-C halfway: exit 130, the leaderboard and best model so far, the resume command.
    driver = start_ftsweep("run", str(space), "--results", str(tmp_path / "results"))
    try:
        _wait_midway(driver, sweep, {}, capsys)
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=300)
    finally:
        stop_group(driver)
    assert driver.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "interrupted" in err
    assert f"ftsweep resume {sweep}" in err
    board = pd.read_csv(sweep / "leaderboard.csv")
    assert "running" in set(board["status"]) and "completed" in set(board["status"])
    assert (sweep / "best" / "model.safetensors").is_file()
    # What Ray saved last is what it resumes from: its finished trials must
    # stay as they are, its running ones continue from their checkpoints.
    progress_1 = saved_progress(sweep)
    finished_1, running_1 = _split(progress_1)
    assert finished_1 and running_1, progress_1
    stopped_1 = reported_epochs(sweep)  # a trial may report once more while the driver stops

    # status --watch from another terminal: an unfinished sweep is shown again
    # and again (here two views), one after the other in a pipe.
    views = io.StringIO()
    watch(str(sweep), interval=0.1, out=views, refreshes=2)
    shown = views.getvalue()
    assert shown.count("--- ") == 2 and shown.count("resumable: yes") == 2, shown
    assert "\x1b" not in shown and "running: trial " in shown

    # 2. Resumed, then the driver's process group killed halfway again.
    time.sleep(3)  # let the stopped Ray processes go
    driver = start_ftsweep("resume", str(sweep))
    try:
        _wait_midway(driver, sweep, progress_1, capsys)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        stop_group(driver)
    killed_2 = reported_epochs(sweep)
    time.sleep(3)  # let the killed Ray processes go
    progress_2 = saved_progress(sweep)
    finished_2, running_2 = _split(progress_2)
    assert finished_2 and running_2, progress_2
    # A kill can cut a file short mid-write: damage Ray's experiment state and
    # an unfinished trial's newest checkpoint. The resume must repair both (the
    # state from its good copy, the trial from an earlier epoch).
    state = sorted((sweep / "tune").glob("experiment_state-*.json"))[-1]
    state.write_bytes(state.read_bytes()[:-100])
    damaged = max(running_2, key=running_2.__getitem__)  # the one with most epochs
    assert running_2[damaged] >= 2, progress_2  # so that an earlier checkpoint exists
    # The checkpoint Ray restores it from: the one of its saved epoch. Found by
    # the epoch in its meta.json: after a resume a checkpoint's number is not
    # always its epoch - 1 (Ray numbers each kept report of the trial).
    restored = [
        c
        for c in (sweep / "tune" / damaged).glob("checkpoint_*")
        if (c / "meta.json").is_file()  # a copy the kill cut short has none
        and json.loads((c / "meta.json").read_text())["epoch"] == running_2[damaged]
    ]
    assert restored, progress_2
    for checkpoint in restored:
        state_pt = checkpoint / "state.pt"
        state_pt.write_bytes(state_pt.read_bytes()[:1000])

    # 3. Resumed in this process, to the end.
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        resumed = main(["resume", str(sweep)])
    finally:
        ray.shutdown()
    said = capsys.readouterr().err + caplog.text
    assert resumed == 0, said[-3000:]
    assert "experiment_state" in said and "resuming from the copy saved" in said, said[-3000:]
    assert state.with_name(state.name + ".damaged").is_file()

    board = pd.read_csv(sweep / "leaderboard.csv")
    assert len(board) == 4 and board["trial_id"].is_unique
    assert (board["status"] == "completed").all()
    assert board["lr"].is_unique  # no configuration was sampled twice
    final = reported_epochs(sweep)
    for trial, epochs in final.items():  # every epoch trained
        assert sorted(set(epochs)) == list(range(1, MAX_EPOCHS + 1)), (trial, epochs)
    for stop, finished, running in (
        (stopped_1, finished_1, running_1),
        (killed_2, finished_2, running_2),
    ):
        for trial in finished:  # finished trials untouched
            assert final[trial][: len(stop[trial])] == stop[trial]
            assert len(final[trial]) == len(stop[trial]), (trial, final[trial])
        for trial, epoch in running.items():
            resumed_at = final[trial][len(stop[trial])]  # the first epoch trained after the stop
            if stop is killed_2 and trial == damaged:  # an earlier checkpoint, never epoch 0
                # One past the damaged epoch was seen once on a fresh clone: a
                # worker of the killed run (outside the driver's process group)
                # finished writing an intact copy of that epoch after the damage.
                assert 1 < resumed_at <= epoch + 1, (progress_2, stop, final)
            else:  # from its checkpoint: Ray's saved state, not the files, says which one
                # Under load, Ray can save a RUNNING trial's last result a moment
                # before it registers that epoch's checkpoint (seen once after SIGINT
                # on a loaded machine): it then resumes from the checkpoint before.
                assert resumed_at in (epoch, epoch + 1), (trial, epoch, stop, final)

    states = sorted((sweep / "tune").glob("searcher-state-*.json"))  # named by start time
    history = json.loads(states[-1].read_text())["trials"]  # Optuna's, as ftsweep saves it
    assert len(history) == 4  # each trial once, across two interruptions
    assert {t["state"] for t in history} == {"COMPLETE"}
    assert sorted(t["ray_trial_id"] for t in history) == sorted(board["trial_id"].astype(str))
