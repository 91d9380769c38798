"""Trial faults: out-of-memory classification, memory release, and injected faults.

Injected faults let a test (or a user checking a cluster set-up) see how a
sweep survives a failing trial. ``FTSWEEP_INJECT_FAULTS`` names a JSON file
holding a list of faults::

    [{"trial": 0, "epoch": 2, "error": "transient", "times": 1},
     {"trial": 1, "epoch": 1, "error": "oom"}]

``trial`` is the trial's number in the order trials first started, from 0
(kept in ``<file>.trials``); ``epoch`` the epoch whose report fails (after it
was trained, before its checkpoint is saved; 0 fails the trial as it starts);
``error`` is ``transient`` (a RuntimeError), ``oom`` (torch.OutOfMemoryError,
as CUDA raises it), ``disk_full`` (the OSError of a checkpoint that finds
no space left) or ``stall`` (no error: the epoch takes ``seconds`` longer, as
on a slow node or a stalled mount); ``times`` how often it fires (default:
every time).
Firings are counted in ``<file>.fired``, so a retry in another process sees them.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import time
from pathlib import Path

INJECT_ENV = "FTSWEEP_INJECT_FAULTS"
FAULT_KINDS = ("transient", "oom", "disk_full", "stall")


class TrialOutOfMemoryError(RuntimeError):
    """A trial ran out of accelerator memory; its configuration needs less of it."""


def out_of_memory_message(error: BaseException, where: str) -> str:
    """One line for the leaderboard's error column, with what to change."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
    return (
        f"out of memory ({where}): {first[:160]} -- lower trial.batch_size or image_size, "
        "or give each trial more of a GPU (resources.gpus)"
    )


def release_memory() -> None:
    """Frees what a finished or failed trial left behind, for the next trial on this GPU.

    Ray reuses a trial's worker process for the next trial; PyTorch's caching
    allocator would otherwise keep the old trial's blocks reserved.
    """
    import torch  # here: search.engine.cluster reads INJECT_ENV without importing torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def maybe_inject(trial_id: str, epoch: int) -> None:
    """Raises the fault that FTSWEEP_INJECT_FAULTS asks for at this trial and epoch, if any."""
    spec_file = os.environ.get(INJECT_ENV)
    if not spec_file:
        return
    number = _trial_number(trial_id, Path(f"{spec_file}.trials"))
    faults = json.loads(Path(spec_file).read_text())
    fired_file = Path(f"{spec_file}.fired")
    for index, fault in enumerate(faults):
        if fault["trial"] != number or fault["epoch"] != epoch:
            continue
        fired = fired_file.read_text().split() if fired_file.exists() else []
        if "times" in fault and fired.count(str(index)) >= fault["times"]:
            continue
        with fired_file.open("a") as f:  # one short append: atomic between processes
            f.write(f"{index}\n")
        if fault["error"] == "oom":
            import torch

            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (injected by "
                f"{INJECT_ENV} at epoch {epoch})"
            )
        if fault["error"] == "stall":
            time.sleep(float(fault.get("seconds", 60)))
            continue
        if fault["error"] == "disk_full":
            raise OSError(
                errno.ENOSPC, f"No space left on device (injected by {INJECT_ENV} at epoch {epoch})"
            )
        raise RuntimeError(f"injected transient fault at epoch {epoch} ({INJECT_ENV})")


def _trial_number(trial_id: str, registry: Path) -> int:
    """The trial's place in the order trials first got here (one appended line each)."""
    known = registry.read_text().split() if registry.exists() else []
    if trial_id not in known:
        with registry.open("a") as f:
            f.write(f"{trial_id}\n")
        known = registry.read_text().split()
    return known.index(trial_id)
