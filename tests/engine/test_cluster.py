"""Sweeps on a Ray cluster: a head and two worker nodes on this machine (CPU only).

One cluster for the module: a sweep that is refused without shared storage,
then one that loses a worker node halfway, then a resume of its storage
copied elsewhere.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
import ray

from search.cli import main
from tests.conftest import start_ftsweep, stop_group

pytestmark = pytest.mark.slow

MAX_EPOCHS = 4
SPACE = f"""
name: c
data: {{source: digits, image_size: 16, test_fraction: 0.0}}
trial: {{max_epochs: {MAX_EPOCHS}, batch_size: 32, max_failures: 2}}
search:
  num_samples: 4
  max_concurrent: 2
  scheduler: {{type: none}}
  finalists: 0
resources: {{cpus: 1, gpus: 0}}
space:
  backbone: squeezenet1_1  # the fastest torchvision backbone to train on the CPU
  weights: none
  lr: {{loguniform: [1.0e-3, 1.0e-2]}}
"""


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    small = {"object_store_memory": 80 * 2**20}
    # Nodes are declared dead after 3 missed health checks a second apart
    # (Ray's defaults wait about half a minute).
    system = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    head = {"num_cpus": 0, "include_dashboard": False, "_system_config": system, **small}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    workers = [cluster.add_node(num_cpus=1, **small) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def _results(experiment: Path) -> dict[str, list[dict]]:
    """trial id -> its results as stored, in order."""
    found = {}
    for file in experiment.glob("trial_*/result.json"):
        lines = [x for x in file.read_text().splitlines() if x.strip()]
        rows = []
        for line in lines:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # being written
        found[file.parent.name.removeprefix("trial_")] = rows
    return found


def _node_to_remove(experiment: Path, workers: list) -> object | None:
    """A worker that finished one trial and runs another past its first epoch,
    at least two epochs from its end (so that it is unfinished when removed)."""
    by_node: dict[str, list[list[dict]]] = {}
    for rows in _results(experiment).values():
        if rows:
            by_node.setdefault(rows[-1]["node_id"], []).append(rows)
    for worker in workers:
        trials = by_node.get(worker.node_id, [])
        done = any(rows[-1]["epoch"] == MAX_EPOCHS for rows in trials)
        if done and any(1 <= rows[-1]["epoch"] <= MAX_EPOCHS - 2 for rows in trials):
            return worker
    return None


def test_multi_node_needs_shared_storage(cluster, write_space, tmp_path, capsys):
    ray_cluster, _ = cluster
    space = write_space(SPACE)
    # validate counts the trials that fit at once over the cluster's nodes.
    assert main(["validate", str(space), "--address", ray_cluster.address, "--no-timing"]) == 0
    out = capsys.readouterr().out
    assert "on the cluster's 3 nodes at most 2 trials at once" in out, out

    # In this process, as a driver of the cluster (a subprocess would import it all again).
    try:
        refused = main(
            ["run", str(space), "--address", ray_cluster.address, "--results", str(tmp_path)]
        )
    finally:
        ray.shutdown()  # this process's connection; the cluster goes on
    err = capsys.readouterr().err
    assert refused == 2, err[-3000:]
    assert "--storage" in err and "2 nodes" in err
    assert "Traceback" not in err
    assert not (tmp_path / "c" / "tune").exists()  # refused before any trial


def test_node_loss_and_storage(cluster, write_space, tmp_path, capsys):
    ray_cluster, workers = cluster
    space = write_space(SPACE)
    results, storage = tmp_path / "results", tmp_path / "shared"
    process = start_ftsweep(
        "run", str(space), "--address", ray_cluster.address,
        "--results", str(results), "--storage", str(storage),
    )  # fmt: skip
    experiment = storage / "c" / "tune"
    removed = None
    try:
        deadline = time.monotonic() + 300
        while removed is None and process.poll() is None and time.monotonic() < deadline:
            removed = _node_to_remove(experiment, workers)
            if removed is None:
                time.sleep(0.2)
        if removed is None:
            stop_group(process)
            pytest.fail(f"no worker ran a second trial:\n{process.stderr.read()[-4000:]}")
        ray_cluster.remove_node(removed, allow_graceful=False)
        out, err = process.communicate(timeout=300)
    finally:
        stop_group(process)
    assert process.returncode == 0, err[-4000:]

    # Every trial once, all completed; the trials ran on both workers.
    board = pd.read_csv(results / "c" / "leaderboard.csv")
    assert len(board) == 4 and board["trial_id"].is_unique
    assert set(board["status"]) == {"completed"}
    stored = _results(experiment)
    nodes = {row["node_id"] for rows in stored.values() for row in rows}
    assert nodes == {w.node_id for w in workers}
    assert set(board["node_id"]) == nodes  # the lost node finished a trial before it went
    # The trial on the lost node moved to the other and went on from its checkpoint.
    survivor = next(w for w in workers if w is not removed).node_id
    moved = {t for t, rows in stored.items() if rows[0]["node_id"] != rows[-1]["node_id"]}
    assert moved, stored  # (unless the trial finished as its node was removed: a rare race)
    for trial in moved:
        rows = stored[trial]
        on_lost = sum(r["node_id"] == removed.node_id for r in rows)
        assert 1 <= on_lost < MAX_EPOCHS, rows
        assert [r["node_id"] for r in rows] == [removed.node_id] * on_lost + [survivor] * (
            MAX_EPOCHS - on_lost
        ), rows
        # From its checkpoint, not from scratch: no epoch trained twice.
        assert [r["epoch"] for r in rows] == list(range(1, MAX_EPOCHS + 1)), rows
        assert rows[on_lost]["iterations_since_restore"] == 1  # a restart, not the same run
        row = board[board["trial_id"] == trial].iloc[0]
        assert row["node_id"] == survivor and row["failures"] >= 1
    # The experiment and the best model are on the storage; the driver keeps its files.
    assert not (results / "c" / "tune").exists()
    for name in ("space.yaml", "split.csv", "leaderboard.csv", "best/model.safetensors"):
        assert (storage / "c" / name).is_file(), name
    assert board["checkpoint"].str.startswith(str(storage)).all()

    # The storage, copied elsewhere, resumes from there (one trial more).
    elsewhere = tmp_path / "moved" / "c"
    shutil.copytree(storage / "c", elsewhere)
    try:
        resumed = main(["resume", str(elsewhere), "--add", "1", "--address", ray_cluster.address])
    finally:
        ray.shutdown()
    assert resumed == 0, capsys.readouterr().err[-4000:]
    again = pd.read_csv(elsewhere / "leaderboard.csv")
    assert len(again) == 5 and set(again["status"]) == {"completed"}
    kept = again.set_index("trial_id").loc[board["trial_id"], "best_val_accuracy"]
    assert kept.tolist() == pytest.approx(board["best_val_accuracy"].tolist())
    assert again["checkpoint"].str.startswith(str(elsewhere)).all()
    assert len(list((storage / "c" / "tune").glob("trial_*"))) == 4  # the original untouched


def test_address_local_starts_ray_here_even_where_ray_address_names_a_cluster(monkeypatch):
    from search.engine.cluster import cluster_address

    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert cluster_address(None) == "head:6379"
    assert cluster_address("local") is None  # --address local: Ray's own word
    assert cluster_address("other:6379") == "other:6379"
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert cluster_address(None) is None


def test_an_address_where_nothing_answers_exits_2_in_seconds(tmp_path, capsys):
    """Ray's own connect would retry for about 14 minutes; a TCP probe tells at once."""
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    start = time.monotonic()
    for command in ("run", "validate"):
        assert main([command, str(space), "--address", f"127.0.0.1:{port}"]) == 2
        err = capsys.readouterr().err
        assert f"nothing answers at 127.0.0.1:{port}" in err and "ray start --head" in err
        assert "Traceback" not in err
    assert time.monotonic() - start < 60
    assert not ray.is_initialized()
