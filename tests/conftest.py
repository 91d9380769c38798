from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # not at run time: OMP_NUM_THREADS below must be set before torch is imported
    from trainables.backbones import Family

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# make test runs a pytest-xdist process per core: each computes with its share
# of the cores (set before torch is imported), not all of them. Two processes
# of two threads each on two cores, beside the trials of a sweep, kept OpenMP
# threads spinning for a core another process held.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, share)))
# Every Ray a test starts without an address is its own, here and in the
# ftsweep processes it starts: never a cluster that `ray start` (or a test
# running beside this one) left on this machine. Addresses given are kept.
os.environ["RAY_ADDRESS"] = "local"
# ftsweep's key for signing sweep state (search/outputs/trust.py) is made on
# first use in the config folder: the tests' own, never the user's.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="ftsweep-test-config-")
os.environ.pop("FTSWEEP_RESULTS_KEY", None)
REPO = Path(__file__).resolve().parent.parent


# The modules with the longest runs, longest first: pytest-xdist (make test: -n 2
# --dist loadfile --no-loadscope-reorder) hands out modules in collection
# order, and one of these started last kept a worker busy for a minute or two
# after the other had finished. The modules that compute without Ray (the ONNX
# exports, the family builds) sit among the sweeps, whose waits they fill.
# Without --no-loadscope-reorder, xdist orders modules by their number of tests
# and ignores this order (test_models, 21 families, went first; one process
# ended 49 s after the other).
LONGEST_FIRST = (
    "tests/sweeps/test_sweep.py",
    "tests/outputs/test_onnx_families.py",
    "tests/engine/test_cluster.py",
    "tests/sweeps/test_faults.py",
    "tests/trainables/test_models.py",
    "tests/sweeps/test_resume.py",
    "tests/engine/test_ray_start.py",
    "tests/sweeps/test_disk_full.py",
    "tests/outputs/test_onnx.py",
    "tests/sweeps/test_constraints.py",
    "tests/cli/test_commands.py",
    "tests/sweeps/test_ctrl_c_twice.py",
    "tests/sweeps/test_legacy_resume.py",
    "tests/sweeps/test_manifest_sweep.py",
    "tests/trainables/test_cache.py",
    "tests/sweeps/test_cannot_fit.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first (stable: the rest keep their order)."""
    rank = {path: number for number, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture
def write_space(tmp_path: Path):
    """Writes a space file from dedented YAML text and returns its path."""

    def write(text: str, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


@pytest.fixture(scope="module")
def ray_session():
    """One light Ray per test module whose sweeps run in this process."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def notified():
    """A local HTTP server that keeps every JSON document POSTed to it: (url, documents)."""
    import http.server
    import threading

    documents: list[dict] = []

    class Keep(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            documents.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keep)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", documents
    server.shutdown()
    server.server_close()


def smallest_of(family: Family) -> str:
    """The torchvision backbone of ``family`` (trainables.backbones.FAMILIES) with
    the fewest parameters, per torchvision's weights metadata: the one the
    family tests build (test_models, test_onnx_families, benchmarks/onnx_families.py)."""
    import torchvision

    from trainables.backbones import family_of, supported_backbones

    members = [n for n in supported_backbones() if family_of(n) is family]
    return min(
        members,
        key=lambda n: torchvision.models.get_model_weights(n).DEFAULT.meta["num_params"],
    )


def dead_url() -> str:
    """A URL nothing answers: a port that was free a moment ago."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/hook"


@pytest.fixture
def ray_stops():
    """For a test whose sweeps run in this process and start Ray there (as
    `ftsweep run` does): that Ray is stopped after the test."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


MINIMAL = """
name: t
data: {source: digits, image_size: 16}
trial: {max_epochs: 2, batch_size: 32}
space:
  backbone: resnet18
  weights: none
"""


# The same sweep with the fastest torchvision backbone to train on the CPU
# (squeezenet1_1: 41 ms a step of 64 images at 16 px on one core, resnet18
# 471 ms): for tests of the sweep's machinery, not of what a backbone learns.
FAST = MINIMAL.replace("backbone: resnet18", "backbone: squeezenet1_1")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def ftsweep(
    *args: str, cwd: Path | None = None, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Runs ``python -m search ARGS`` to the end (in ``env``, default this one's)."""
    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env={**(env or os.environ), "PYTHONPATH": str(REPO)},
        timeout=timeout,
    )


def start_ftsweep(*args: str) -> subprocess.Popen:
    """Starts ``python -m search ARGS`` in its own process group (see stop_group)."""
    return subprocess.Popen(
        [sys.executable, "-m", "search", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
        start_new_session=True,  # a kill of the group takes its Ray processes with it
    )


def stop_group(process: subprocess.Popen) -> None:
    """Kills a process started by start_ftsweep, and the Ray it started, if still running."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)


def reported_epochs(sweep: Path) -> dict[str, list[int]]:
    """trial folder name -> the epochs that reached its result.json."""
    found = {}
    for result in (sweep / "tune").glob("trial_*/result.json"):
        lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
        found[result.parent.name] = [r["epoch"] for r in lines]
    return found


def saved_progress(sweep: Path) -> dict[str, tuple[str, int]]:
    """trial id -> (status, last epoch) in Ray's newest saved experiment state.

    What a resume will start from; empty while no state is saved or one is
    being written.
    """
    states = sorted((sweep / "tune").glob("experiment_state-*.json"))
    try:
        data = json.loads(states[-1].read_text())
        progress = {}
        for entry in data["trial_data"]:
            trial, meta = json.loads(entry[0]), json.loads(entry[1])
            epoch = (meta.get("last_result") or {}).get("epoch", 0)
            progress[trial["trial_id"]] = (trial["status"], epoch)
        return progress
    except (IndexError, KeyError, ValueError, OSError):
        return {}


def model_folder(
    folder: Path,
    classes: list[str],
    backbone: str = "resnet18",
    image_size: int = 16,
    network: Any = None,
) -> Path:
    """An exported model folder (an untrained ``backbone``, or ``network``), as
    `export` writes one."""
    import safetensors.torch

    from trainables.models import build_model

    folder.mkdir()
    if network is None:
        network = build_model(backbone, len(classes), image_size=image_size)
    weights = {k: v.contiguous() for k, v in network.state_dict().items()}
    safetensors.torch.save_file(weights, str(folder / "model.safetensors"))
    group = {"backbone": backbone, "weights": "none", "frozen_depth": 0, "head_hidden": 0,
             "head_dropout": 0.0, "stochastic_depth": None}  # fmt: skip
    description = {
        "format_version": 1,
        "backbone": backbone,
        "model": group,
        "head": {"hidden": 0, "dropout": 0.0},
        "classes": classes,
        "image_size": image_size,
    }
    (folder / "model.json").write_text(json.dumps(description))
    return folder
