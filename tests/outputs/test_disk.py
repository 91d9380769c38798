"""A full disk, in pieces and without Ray running: recognising one, stopping
before it costs a trial, and putting a trial it failed back in the queue."""

from __future__ import annotations

import errno
import json
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from search.engine import disk_guard
from search.engine.disk_guard import DiskGuard
from search.outputs import trust
from search.outputs.disk import (
    disk_full_error,
    is_disk_full,
    raise_if_disk_full,
    requeue_disk_full,
)
from search.outputs.text import size_text
from trainables.errors import UserError

FULL_TRACEBACK = (
    "Failure # 1 (occurred at 2026-12-05_10-00-00)\n"
    "ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)\n"
    '  File "pyarrow/_fs.pyx", line 1, in copy_files\n'
    "OSError: error writing to trial_x/checkpoint_000001/state.pt: No space left on device\n"
)


def test_a_full_disk_is_recognised_however_it_is_raised():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    try:  # Ray wraps the worker's error; the cause is what counts
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("trial failed") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert is_disk_full(FULL_TRACEBACK)  # pyarrow's text, errno lost
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full("RuntimeError: injected transient fault at epoch 2")
    assert not is_disk_full(None)


def test_the_message_names_the_folder_the_free_space_and_the_fix(tmp_path):
    error = disk_full_error(tmp_path, "trial a1 could not save its checkpoint")
    assert isinstance(error, UserError)
    text = str(error)
    assert str(tmp_path) in text and "free now" in text and "ftsweep resume" in text
    with pytest.raises(UserError):
        raise_if_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    raise_if_disk_full(ValueError("another problem"), tmp_path)  # not ours to turn into exit 2
    assert size_text(812 * 1024) == "812 KiB" and size_text(37.5 * 1024**2) == "37.5 MiB"


def _state(tune_dir: Path, trials: dict[str, tuple[str, str | None]]) -> Path:
    """An experiment state as Ray writes it: each trial a JSON string of its own."""
    entries = []
    for trial_id, (status, failure) in trials.items():
        trial = {"trial_id": trial_id, "status": status, "relative_logdir": f"trial_{trial_id}"}
        (tune_dir / f"trial_{trial_id}").mkdir(parents=True)
        if failure is not None:
            (tune_dir / f"trial_{trial_id}" / "error.txt").write_text(failure)
        entries.append([json.dumps(trial, indent=2), json.dumps({"num_failures": 1})])
    path = tune_dir / "experiment_state-2026-12-05_10-00-00.json"
    path.write_text(json.dumps({"trial_data": entries, "runner_data": {}, "stats": {}}))
    trust.sign(str(tune_dir))
    return path


def test_resume_requeues_exactly_the_trials_a_full_disk_failed(tmp_path):
    other = "Failure # 1 (occurred at 2026-12-05_10-00-00)\nRuntimeError: bad config\n"
    earlier_full_then_other = FULL_TRACEBACK + other.replace("# 1", "# 2")
    path = _state(
        tmp_path,
        {
            "full": ("ERROR", FULL_TRACEBACK),
            "bad": ("ERROR", other),
            "later": ("ERROR", earlier_full_then_other),  # its newest failure is what counts
            "done": ("TERMINATED", None),
        },
    )
    assert requeue_disk_full(tmp_path) == ["full"]
    statuses = {
        json.loads(t)["trial_id"]: json.loads(t)["status"]
        for t, _ in json.loads(path.read_text())["trial_data"]
    }
    assert statuses == {"full": "PAUSED", "bad": "ERROR", "later": "ERROR", "done": "TERMINATED"}
    # Edited by ftsweep, so still signed: the resume that follows trusts it.
    assert trust.verify(str(tmp_path), trust=False) == []
    assert requeue_disk_full(tmp_path) == []  # nothing left to put back


def _trials(*statuses: str) -> list[SimpleNamespace]:
    storage = SimpleNamespace(experiment_fs_path="/nonexistent/tune")
    return [
        SimpleNamespace(status=s, storage=storage, trial_id=f"t{i}") for i, s in enumerate(statuses)
    ]


@pytest.fixture
def usr1():
    """SIGUSR1 recorded, as Ray's fit() would handle it."""
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(True))
    yield received
    signal.signal(signal.SIGUSR1, previous)


def test_the_guard_stops_while_a_checkpoint_per_running_trial_still_fits(
    tmp_path, monkeypatch, usr1
):
    free = {"bytes": 10 * 1024**3}
    monkeypatch.setattr(disk_guard, "free_bytes", lambda folder: free["bytes"])
    guard = DiskGuard(tmp_path, margin=64 * 1024**2)
    checkpoint = tmp_path / "checkpoint_000001"
    checkpoint.mkdir()
    (checkpoint / "state.pt").write_bytes(b"\0" * 1024**2)  # 1 MiB
    trials = _trials("RUNNING", "RUNNING", "PENDING")
    guard.on_checkpoint(1, trials, trials[0], SimpleNamespace(path=str(checkpoint)))
    assert guard.needed(2) == 64 * 1024**2 + 2 * 1024**2 * 2
    guard.on_step_begin(2, trials)
    assert guard.stopped is None and not usr1

    free["bytes"] = 67 * 1024**2  # under 64 MiB + two 1-MiB checkpoints for each of two trials
    guard.on_step_begin(3, trials)  # checked at most every CHECK_EVERY_S...
    assert guard.stopped is None
    guard.on_trial_recover(4, trials, SimpleNamespace(trial_id="t0", error_file=None))
    assert guard.stopped is not None and usr1 == [True]  # ...and after every failure
    assert "67.0 MiB free" in guard.stopped
    guard.on_step_begin(5, trials)
    assert usr1 == [True]  # once


def test_a_trial_failed_by_a_full_disk_stops_the_guard_though_space_is_back(
    tmp_path, monkeypatch, usr1
):
    monkeypatch.setattr(disk_guard, "free_bytes", lambda folder: 10 * 1024**3)
    error_file = tmp_path / "error.txt"
    error_file.write_text(FULL_TRACEBACK)
    guard = DiskGuard(tmp_path)
    trial = SimpleNamespace(trial_id="a1", error_file=str(error_file))
    guard.on_trial_error(1, _trials("RUNNING"), trial)
    assert guard.stopped == "trial a1 could not save its checkpoint" and usr1 == [True]


def test_a_sweep_stopped_in_its_first_step_has_its_one_state_save_signed(tmp_path):
    """Stopped before any step began with trials (a full disk found at once, or
    Ctrl-C), Ray saves the state once, at the end: resume must trust it."""
    from search.engine.state_backup import StateBackup

    staging, experiment = tmp_path / "staging", tmp_path / "tune"
    staging.mkdir()
    experiment.mkdir()
    storage = SimpleNamespace(
        experiment_driver_staging_path=str(staging), experiment_fs_path=str(experiment)
    )
    backup = StateBackup(str(experiment))
    backup.on_step_begin(1, [])  # the first step: no trial yet
    backup.on_step_end(1, [SimpleNamespace(storage=storage)])  # it added them
    state = staging / "experiment_state-2026-12-05_10-00-00.json"
    state.write_text(json.dumps({"trial_data": []}))  # Ray's final save...
    backup.get_state()  # ...at whose end Ray calls this
    (experiment / state.name).write_bytes(state.read_bytes())  # Ray's upload
    assert trust.verify(str(experiment), trust=False) == []
