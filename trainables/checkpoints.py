"""A trial's checkpoints: written each epoch, read back when it resumes.

Torch's safe loader only (``weights_only=True``): a checkpoint is data, never
code. A resumed trial whose checkpoint is damaged or gone continues from its
nearest readable sibling rather than from scratch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from trainables import hparams as hp
from trainables.checkpoint_files import META_FILE, STATE_FILE

log = logging.getLogger(__name__)


def save_state(directory: Path, metrics: dict[str, Any], **state: Any) -> None:
    torch.save(state, directory / STATE_FILE)
    (directory / META_FILE).write_text(json.dumps(metrics))


def load_state(directory: Path) -> dict[str, Any]:
    """Reads a checkpoint's state without unpickling arbitrary objects."""
    return torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)


def load_resume_state(directory: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The checkpoint's state; if it is damaged or gone, the newest good earlier one.

    A trial resumes from an earlier epoch (and trains the lost ones again)
    rather than from scratch; with no earlier one, from a later one that Ray's
    lagging saved state did not know of yet; with no readable checkpoint it fails,
    naming the file, instead of silently starting over.

    Returns:
        The state, and the metrics a later checkpoint was saved with (None
        when the state is the checkpoint's own or an earlier one): the driver
        may never have recorded that epoch, so the trial reports it again.
    """
    try:
        return load_state(directory), None
    except Exception as exc:  # truncated zip, missing file, bad pickle opcode...
        problem = f"{directory / STATE_FILE} cannot be read ({type(exc).__name__}: {exc})"
    epoch = _checkpoint_number(directory)
    others = [p for p in directory.parent.glob("checkpoint_*") if p != directory]
    earlier = sorted(
        (p for p in others if _checkpoint_number(p) < epoch), key=_checkpoint_number, reverse=True
    )
    # After a kill, Ray's saved state can lag behind the checkpoints on disk
    # (it saves every few seconds): a later one, already kept, is better than none.
    later = sorted((p for p in others if _checkpoint_number(p) > epoch), key=_checkpoint_number)
    for candidate in [*earlier, *later]:
        try:
            state = load_state(candidate)
        except Exception:
            continue
        later_one = _checkpoint_number(candidate) > epoch
        which = "later" if later_one else "earlier"
        log.warning("%s; continuing from the %s %s instead", problem, which, candidate.name)
        return state, _saved_metrics(candidate) if later_one else None
    raise RuntimeError(
        f"{problem}, and no other checkpoint of this trial can be read; "
        "the trial cannot continue (delete its folder to start it again)"
    )


def _saved_metrics(directory: Path) -> dict[str, Any] | None:
    try:
        metrics = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError):
        return None  # the state is good; only the record of its epoch is lost
    return metrics if isinstance(metrics, dict) and hp.EPOCH in metrics else None


def _checkpoint_number(path: Path) -> int:
    try:
        return int(path.name.rsplit("_", 1)[-1])
    except ValueError:
        return -1
