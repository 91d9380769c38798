"""`ftsweep run --address` against a head from the `ray start` command line, with object storage."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FAST, ftsweep

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_head(port: int, temp: str, env: dict[str, str]) -> subprocess.Popen:
    ray = Path(sys.executable).with_name("ray")
    return subprocess.Popen(
        [
            str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
            "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )  # fmt: skip


def _stop_head(head: subprocess.Popen) -> None:
    """Interrupted, `ray start --block` stops the processes it started and
    waits for them; whatever is left of its process group is killed."""
    if head.poll() is None:
        head.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=30)


def _node_active(address: str, env: dict[str, str]) -> bool:
    """Whether the head's node has registered: its raylet is past start-up."""
    ray = Path(sys.executable).with_name("ray")
    with contextlib.suppress(subprocess.TimeoutExpired):
        status = subprocess.run(
            [str(ray), "status", f"--address={address}"],
            capture_output=True, text=True, env={**env, "RAY_AUTH_MODE": "token"}, timeout=60,
        )  # fmt: skip
        return status.returncode == 0 and "Active:\n 1 node_" in status.stdout
    return False


@pytest.fixture
def ray_head(tmp_path):
    """A head from `ray start --head --block` in its own process group, killed after.

    Its home holds a Ray token (as `ray get-auth-token --generate`, or any
    earlier local Ray, leaves one), so the head requires it: the driver must
    present it without being told to (RAY_AUTH_MODE is unset).

    The head is used once its node is active. A raylet that starts while the
    CPUs are busy (another test process) can miss Ray's wait for its agents'
    ports and abort, and `ray start` then ends: such a head is started again
    (at most three times).
    """
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(home)
    env.pop("RAY_ADDRESS", None)
    for _attempt in range(3):
        port = _free_port()
        # Short: Ray's socket paths live under it (a Unix socket path has 107 bytes).
        temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
        head = _start_head(port, temp, env)
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and head.poll() is None:
            if _node_active(address, env):
                break
            time.sleep(1)
        if head.poll() is None and time.monotonic() < deadline:
            break
        _stop_head(head)
        shutil.rmtree(temp, ignore_errors=True)
    else:
        pytest.fail("`ray start --head` did not bring up an active node in three tries")
    try:
        yield address, temp, env
    finally:
        _stop_head(head)
        shutil.rmtree(temp, ignore_errors=True)


def test_run_on_a_head_from_ray_start(ray_head, write_space, tmp_path):
    address, temp, env = ray_head
    minimal = FAST.replace("max_epochs: 2", "max_epochs: 1")
    space = write_space(minimal + "search: {num_samples: 2, max_concurrent: 2, finalists: 1}\n")
    # Object storage as pyarrow opens it (file:// stands in for s3:// or gs://).
    bucket = f"file://{tmp_path}/bucket"
    results = tmp_path / "results"
    done = ftsweep(
        "run", str(space), "--address", address, "--results", str(results), "--storage", bucket,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    port = address.rsplit(":", 1)[1]
    assert "Connecting to existing Ray cluster at address: " in done.stderr
    assert f":{port}" in done.stderr
    assert "connecting again with Ray's token authentication on" in done.stderr
    board = pd.read_csv(results / "t" / "leaderboard.csv")
    assert len(board) == 2 and set(board["status"]) == {"completed"}
    assert board["node_id"].nunique() == 1  # the head is the cluster's only node
    assert board["test_accuracy"].notna().sum() == 1  # the finalist's weights were fetched
    for folder in (results / "t", tmp_path / "bucket" / "t"):
        assert (folder / "best" / "model.safetensors").is_file(), folder
    assert (tmp_path / "bucket" / "t" / "tune" / "tuner.pkl").is_file()
    # Here, a copy of the experiment to read, without the weights it did not need.
    assert len(list((results / "t" / "tune").glob("trial_*/checkpoint_*/state.pt"))) == 1
    # The trials ran in the head's session (its workers), not a Ray this command started.
    sessions = list(Path(temp).glob("session_*/logs/worker-*.out"))
    assert sessions, "no worker of the head's session ran"
    # The code reached the workers in the runtime environment, as on a cluster
    # whose nodes do not have ftsweep installed.
    shipped = {p.name for p in Path(temp).glob("session_*/runtime_resources/py_modules_files/*/*")}
    assert {"search", "trainables"} <= shipped, shipped
