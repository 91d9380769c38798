"""A full disk: how ftsweep recognises it, says it, and takes back what it cost.

A sweep stops like Ctrl-C when its results folder runs out of space
(engine/disk_guard.py); this module holds what needs no Ray: the free space
of a folder, the paragraph the user gets, and, on resume, the trials that
errored because a write failed for lack of space put back in the queue.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

from search.outputs.ray_files import write_signed
from search.outputs.text import size_text
from trainables.errors import UserError

log = logging.getLogger(__name__)

# How a failed write for lack of space reads, from Python (errno 28, and 122
# for a quota) or from pyarrow, which Ray copies checkpoints with.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "[Errno 28]", "[Errno 122]")
ERROR_FILE = "error.txt"  # Ray's record of a trial's failures, in its folder


def is_disk_full(error: BaseException | str | None) -> bool:
    """Whether an exception (or any in its chain), or an error's text, is a full disk."""
    if error is None:
        return False
    if isinstance(error, str):
        return any(text in error for text in _FULL_TEXTS)
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if is_disk_full(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def free_bytes(folder: Path) -> int | None:
    """Free space for an unprivileged writer in ``folder`` (None: cannot tell)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full_error(folder: Path, why: str) -> UserError:
    """The paragraph a sweep stopped by a full disk ends with (exit 2)."""
    free = free_bytes(folder)
    left = "unknown" if free is None else size_text(free)
    return UserError(
        f"the disk holding the results folder is full ({why}; {left} free now). The sweep "
        "stopped the way Ctrl-C stops it: each unfinished trial keeps its last good "
        "checkpoint and nothing already trained is lost. Free some space there (or move "
        f"the folder to a larger disk), then run `ftsweep resume {folder}`: the sweep "
        "ends with the trials it planned, each trained once",
        str(folder),
    )


def last_failure(error_file: Path) -> str:
    """The text of a trial's newest failure, from Ray's error.txt ('' when none)."""
    try:
        text = error_file.read_text(errors="replace")
    except OSError:
        return ""
    return text.rsplit("Failure # ", 1)[-1]


def requeue_disk_full(tune_dir: Path) -> list[str]:
    """Trials that errored because the disk was full go back to the queue.

    In the newest experiment state, each ERROR trial whose newest failure
    was a full disk becomes PAUSED: Ray's restore then continues it from
    its last checkpoint, as it does a trial that Ctrl-C stopped. The file
    is written back atomically and signed (ray_files.write_signed).

    Returns:
        The ids of the trials put back.
    """
    states = sorted(tune_dir.glob("experiment_state-*.json"))
    if not states:
        return []
    try:
        data = json.loads(states[-1].read_text())
        entries = data["trial_data"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # repair_state and Ray's restore say what is wrong with it
    requeued = []
    for entry in entries:
        try:
            trial = json.loads(entry[0])
        except (ValueError, TypeError, IndexError):
            continue
        if not isinstance(trial, dict) or trial.get("status") != "ERROR":
            continue
        if not is_disk_full(
            last_failure(tune_dir / str(trial.get("relative_logdir")) / ERROR_FILE)
        ):
            continue
        trial["status"] = "PAUSED"
        entry[0] = json.dumps(trial, indent=2)
        requeued.append(str(trial.get("trial_id")))
    if requeued:
        write_signed(states[-1], json.dumps(data).encode())
        log.info("the disk was full when trials %s failed: they continue", ", ".join(requeued))
    return requeued


def raise_if_disk_full(error: BaseException, folder: Path) -> None:
    """Re-raises a driver's failed write for lack of space as the paragraph (exit 2)."""
    if is_disk_full(error):
        raise disk_full_error(folder, f"a write failed: {error}") from None
