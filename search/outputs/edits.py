"""What a resume may take from an edited space.yaml, and what it must refuse.

A sweep keeps the space it started from (space.original.yaml beside
space.yaml). Before a resume the two are compared key by key: a change to
what a trial computes (the data, image size, epochs, batch size, the
searched space, the metric, the sampler, the scheduler) would mix trials of
two sweeps in one leaderboard, so it is refused with a short diff. A change
to how the sweep runs (resources per trial, trials at once, the time budget,
the number of finalists) is applied and listed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from search.outputs.layout import ORIGINAL_SPACE_FILE, SPACE_FILE
from trainables.errors import UserError

log = logging.getLogger(__name__)

# Dotted keys (or their sections) a resume applies.
APPLIED = (
    "resources",
    "search.max_concurrent",
    "search.time_budget",
    "search.finalists",
)


def check_edits(sweep_dir: Path) -> list[str]:
    """Compares space.yaml with the space the sweep started from (a sweep from
    before this check has no copy: nothing to compare).

    Returns:
        The changes a resume applies, logged, one line each.

    Raises:
        UserError: a change to what a trial computes, with a short diff.
    """
    original = sweep_dir / ORIGINAL_SPACE_FILE
    if not original.is_file():
        return []
    before = yaml.safe_load(original.read_text(encoding="utf-8"))
    after = yaml.safe_load((sweep_dir / SPACE_FILE).read_text(encoding="utf-8"))
    refused, applied = split(changes(before, after))
    if refused:
        more = ""
        if any(line.startswith("search.num_samples:") for line in refused):
            more = " To run more trials, put num_samples back and use `ftsweep resume --add N`."
        raise UserError(
            f"space.yaml was edited since the sweep started, in ways a resume cannot honour "
            f"(its trials would not compare with the earlier ones): {'; '.join(refused)}. Put "
            f"the values back ({ORIGINAL_SPACE_FILE} beside it is the space the sweep started "
            f"from), or start a new sweep with `ftsweep run` on the edited file.{more}",
            str(sweep_dir / SPACE_FILE),
        )
    for line in applied:
        log.warning("space.yaml changed since the sweep started; applying %s", line)
    return applied


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every key that differs; None: absent."""
    old, new = _flat(before), _flat(after)
    return [
        (k, old.get(k), new.get(k))
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    ]


def split(found: list[tuple[str, Any, Any]]) -> tuple[list[str], list[str]]:
    """(refused, applied) changes, each written as ``key: old -> new``."""
    refused, applied = [], []
    for key, old, new in found:
        line = f"{key}: {_show(old)} -> {_show(new)}"
        if any(key == a or key.startswith(f"{a}.") for a in APPLIED):
            applied.append(line)
        else:
            refused.append(line)
    return refused, applied


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        found: dict[str, Any] = {}
        for key, inner in value.items():
            found.update(_flat(inner, f"{prefix}.{key}" if prefix else str(key)))
        return found
    return {prefix: value}


def _show(value: Any) -> str:
    return "(absent)" if value is None else repr(value)
