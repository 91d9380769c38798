"""One driver per sweep folder: ``run`` and ``resume`` hold RESULTS/NAME/.ftsweep.lock.

The lock is the operating system's (``fcntl.flock`` on the file, open for as
long as the driver runs): it ends with the process, however the process
ends (Ctrl-C, SIGKILL, a crash), so there is no stale lock to clear by
hand. The file says who holds it (pid, host, command, start time), for the
message the second driver prints. On NFS, Linux takes flock as an NFS lock
that every client sees; object storage (``--storage s3://...``) has no
locks, so there the lock is on the driver's own RESULTS/NAME only
(docs/cluster.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from search.outputs.layout import LOCK_FILE
from trainables.errors import UserError


class Held(Exception):
    """Another driver holds the folder: ``holder`` says who, as it wrote it."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def try_lock(sweep_dir: Path) -> IO[str]:
    """Takes the folder's lock and writes who holds it; the open file is the lock.

    Raises:
        Held: another process holds it.
    """
    path = sweep_dir / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 (held open: closing it releases the lock)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = _describe(handle.read())
        handle.close()
        raise Held(holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": " ".join(["ftsweep", *sys.argv[1:]]),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
        )
    )
    handle.flush()
    return handle


def _describe(text: str) -> str:
    try:
        who = json.loads(text)
        return (
            f"pid {who['pid']} on {who['host']}, `{who['command']}`, running since {who['since']}"
        )
    except (ValueError, KeyError, TypeError):
        return "another ftsweep process"


def driver_of(sweep_dir: Path) -> str | None:
    """Who drives the sweep now (as ``Held.holder`` says it), or None: no driver.

    Asks for a shared lock and gives it back at once: a driver starting in
    that instant would find the folder held and go to NAME-2 (run) or be
    refused (resume), which is why only ``status`` asks.
    """
    try:
        handle = open(sweep_dir / LOCK_FILE)  # noqa: SIM115 (closed below, either way)
    except OSError:
        return None  # never driven since locks came in, or unreadable
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _describe(handle.read())
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


_HELD: dict[Path, IO[str]] = {}  # folders this process claimed (claim_free), by path


def claim_free(
    results: Path, name: str, taken: Callable[[str], bool], *, fixed: bool
) -> str | None:
    """The first of NAME, NAME-2, NAME-3, ... that holds no sweep (``taken``) and
    no driver, claimed for this process until ``release``; None when ``fixed``
    (a name given with --name) and NAME is not free."""
    candidates = [name] if fixed else [name, *(f"{name}-{i}" for i in range(2, 10_000))]
    for candidate in candidates:
        folder = results / candidate
        if taken(candidate):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        try:
            _HELD[folder.resolve()] = try_lock(folder)
        except Held:  # another driver claimed it a moment ago
            continue
        return candidate
    return None


def release(sweep_dir: Path) -> None:
    handle = _HELD.pop(sweep_dir.resolve(), None)
    if handle is not None:
        handle.close()


@contextlib.contextmanager
def driving(sweep_dir: Path) -> Iterator[None]:
    """Holds the folder's lock for the ``with`` block (a resume).

    Raises:
        UserError: another driver holds it, named.
    """
    try:
        handle = try_lock(sweep_dir)
    except Held as held:
        raise UserError(
            f"another driver is running this sweep ({held.holder}); two drivers would train "
            "the same trials. Wait for it to end, or stop it (Ctrl-C in its terminal, or "
            "`kill PID`), then resume",
            str(sweep_dir),
        ) from None
    try:
        yield
    finally:
        handle.close()  # releases the lock
