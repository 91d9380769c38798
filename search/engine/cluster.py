"""Joining Ray: a local Ray, or an existing cluster, checked before any trial starts."""

from __future__ import annotations

import logging
import os
import random
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.space.checks import unmet_resources
from trainables.errors import UserError
from trainables.faults import INJECT_ENV

if TYPE_CHECKING:
    from search.space.spec import ResourcesSpec
    from trainables.finetune import TrialSetup

log = logging.getLogger(__name__)

FORWARDED_ENV = (INJECT_ENV,)  # to the workers of a cluster: a test's fault injection


@dataclass(frozen=True)
class Node:
    node_id: str
    ip: str


def cluster_address(address: str | None) -> str | None:
    """The existing cluster to join: ``--address``, else ``RAY_ADDRESS``; None: start Ray here.

    ``local`` is Ray's own word for "start a new instance on this machine"
    (never join one that ``ray start`` left running here).
    """
    found = address or os.environ.get("RAY_ADDRESS") or None
    return None if found == "local" else found


def start_ray(address: str | None, *, verbose: bool = False) -> None:
    """Starts Ray here, or connects to ``address`` (see cluster_address).

    The project's code travels to a cluster's workers in Ray's runtime
    environment (``py_modules``), so they need the dependencies installed,
    not ftsweep itself. Starting Ray here, its own lines ("Started a local
    Ray instance", the token-authentication notice) show with ``verbose`` only.
    """
    import ray

    import search
    import trainables

    asked = address
    address = cluster_address(address)
    if ray.is_initialized():
        return
    runtime_env: dict[str, Any] | None = None
    if address is not None:
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        runtime_env = {"py_modules": [search, trainables], "excludes": ["__pycache__"]}
        if env:
            runtime_env["env_vars"] = env
    if address is not None:
        _check_answers(address)
    if address is None and not verbose:
        logging.getLogger(TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
    try:  # --address local: a new instance even where RAY_ADDRESS names a cluster
        quiet = address is None and not verbose
        _init("local" if asked == "local" else address, runtime_env, quiet=quiet)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        if address is None:
            raise
        if not _token_refused(exc):
            raise UserError(
                f"cannot connect to the Ray cluster at {address} ({exc}); check the head's "
                "address (`ray status` on the head prints it: HOST:6379), that this machine "
                "reaches it, that its Ray version matches this one's, and, if the cluster uses "
                "token authentication, that RAY_AUTH_MODE=token and its token are set here",
                "--address",
            ) from None
        log.warning(
            "the cluster refused this connection; connecting again with Ray's token "
            "authentication on (set RAY_AUTH_MODE=token to skip this step)"
        )
        _init(address, runtime_env)


HEAD_CONNECT_TIMEOUT_S = 10.0


def _check_answers(address: str) -> None:
    """Fails at once where nothing answers at ``address`` (HOST:PORT, or ray://HOST:PORT).

    Ray's own connect retries a head that is absent or gone for about 14
    minutes (20 tries of 41 s) before it gives up; a TCP connect tells in
    seconds. ``auto`` and other forms are left to Ray.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), HEAD_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UserError(
            f"nothing answers at {address} ({exc.strerror or exc}); start the cluster's head "
            "there (`ray start --head --port=PORT` prints its address), or give --address the "
            "HOST:PORT that `ray status` on the head names (leave --address and RAY_ADDRESS "
            "out to run on this machine alone)",
            "--address",
        ) from None


TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def _init(address: str | None, runtime_env: dict[str, Any] | None, *, quiet: bool = False) -> None:
    import ray

    ray.init(
        address=address,
        include_dashboard=False,
        log_to_driver=True,
        runtime_env=runtime_env,
        logging_level=logging.WARNING if quiet else logging.INFO,
    )


def _token_refused(error: Exception) -> bool:
    """Whether to connect again with Ray's token authentication on (and turns it on).

    ``ray start --head`` turns token authentication on by itself when it
    finds a token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) and
    RAY_AUTH_MODE is unset; a driver that connects does not (Ray 2.60), and
    that head refuses it. Presenting the token to a head without
    authentication is no answer either: its actors then fail to start. So
    the token is tried only after a refusal, with Ray's own step of
    ``ray start``.
    """
    if "RAY_AUTH_MODE" in os.environ or not isinstance(error, ConnectionError):
        return False
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray before token authentication (2.52)
        return False
    return maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def alive_nodes() -> list[Node]:
    """The cluster's live nodes that can run a trial (some CPU or GPU)."""
    import ray

    return [
        Node(n["NodeID"], n["NodeManagerAddress"])
        for n in ray.nodes()
        if n["Alive"] and (n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)
    ]


def check_cluster(setup: TrialSetup, *, shared_storage: bool) -> None:
    """Refuses a multi-node sweep without shared storage, and data some node cannot read.

    Without shared storage, trials may run only on the node of this driver
    (one machine); a cluster with no node for trials yet is assumed to grow.

    Raises:
        UserError: naming every node that failed and why, before any trial starts.
    """
    import ray

    nodes = alive_nodes()
    here = ray.get_runtime_context().get_node_id()  # the node this driver is attached to
    if not shared_storage and (not nodes or any(n.node_id != here for n in nodes)):
        reach = (
            f"this Ray cluster has {len(nodes)} nodes that can run trials"
            if nodes
            else "no node of this Ray cluster can run a trial yet (an autoscaler adds them)"
        )
        raise UserError(
            f"{reach}, and trials on other nodes cannot write their checkpoints into this "
            "machine's results folder; add --storage PATH_OR_URI: a folder every node "
            "mounts (NFS, Lustre) or object storage (s3://bucket/sweeps, gs://bucket/sweeps)",
            "--storage",
        )
    problems = _check_data_on(nodes, setup)
    if problems:
        listed = "; ".join(f"node {ip} ({node_id[:12]}): {why}" for node_id, ip, why in problems)
        raise UserError(
            f"{len(problems)} of {len(nodes)} nodes cannot read the sweep's data: {listed}. "
            "Every node must see the data at the same path (mount it there, or copy it to "
            "the same path on each node), and be able to write its image cache "
            "(FTSWEEP_CACHE_DIR, default its temporary folder)",
            setup.data_root or "data.source",
        )
    if len(nodes) > 1:
        log.info("data readable on all %d nodes: %s", len(nodes), ", ".join(n.ip for n in nodes))


def _check_data_on(nodes: list[Node], setup: TrialSetup) -> list[tuple[str, str, str]]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from trainables.finetune import split_frame  # here: a node's check imports this module

    frame = split_frame(setup)
    paths = frame["path"].tolist()
    picked = random.Random(0).sample(range(len(paths)), min(3, len(paths)))
    sample = sorted({0, len(paths) - 1, *picked}) if paths else []
    files = [paths[i] for i in sample] if setup.data_root else []
    cache_dir = str(Path(setup.cache.path).parent) if setup.cache else None
    check = ray.remote(num_cpus=0, max_retries=0)(_readable)
    pending = {
        node.node_id: check.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)
        ).remote(setup.data_root, files, cache_dir)
        for node in nodes
    }
    problems = []
    for node in nodes:
        try:
            why = ray.get(pending[node.node_id], timeout=120)
        except Exception as exc:  # the node died, or cannot start a worker
            why = f"the check could not run there ({type(exc).__name__}: {exc})"
        if why:
            problems.append((node.node_id, node.ip, why))
    return problems


def _readable(root: str | None, files: list[str], cache_dir: str | None) -> str | None:
    """Runs on one node: None when it reads the data and can write the cache, else why not."""
    if root is not None:
        if not os.path.isdir(root):
            return f"{root} is not a folder there"
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as handle:
                    handle.read(16)
            except OSError as exc:
                return f"cannot read {path} ({exc.strerror or exc})"
    if cache_dir is not None:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            probe = os.path.join(cache_dir, f".probe-{os.getpid()}")
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as exc:
            return f"cannot write the image cache in {cache_dir} ({exc.strerror or exc})"
    return None


def cluster_nodes(address: str | None) -> list[dict[str, float]] | None:
    """The resources of each alive node of the Ray cluster at ``address`` (or
    RAY_ADDRESS); None when the sweep would start Ray on this machine."""
    from search.engine.cluster import cluster_address, start_ray

    if cluster_address(address) is None:
        return None
    import ray

    start_ray(address)
    try:
        return node_resources()
    finally:
        ray.shutdown()


def node_resources() -> list[dict[str, float]]:
    """Each alive node's resources, as Ray reports them ({"CPU": 16.0, "GPU": 1.0, ...})."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def check_fits(resources: ResourcesSpec, *, on_cluster: bool, where: str) -> None:
    """Before any trial starts: one trial's resources fit some node.

    On the Ray started here, a trial that fits no node would wait forever:
    exit 2. On a cluster it may be an autoscaling one that adds such a node
    on demand, so the sweep goes on and says what it waits for.
    """
    problem = unmet_resources(resources, node_resources())
    if problem is None:
        return
    if not on_cluster:
        raise UserError(
            f"{problem}: its trials would wait forever. Lower resources.cpus / resources.gpus "
            "in the space file, or run on a cluster that has such a node (--address)",
            f"{where} (resources)",
        )
    log.warning(
        "%s: trials wait until the cluster adds such a node (an autoscaling cluster does); "
        "if it cannot, stop with Ctrl-C and lower resources: in the space file",
        problem,
    )
