"""ftsweep: search for the best way to fine-tune a pre-trained image classifier."""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Imported on first use, so that a command which only reads a results folder
# (leaderboard, status, plot) does not import Ray.
_EXPORTS = {
    "FineTunedModel": "search.export",
    "export_trial": "search.export",
    "load_model": "search.export",
    "Space": "search.space",
    "load_space": "search.space",
    "SweepResult": "search.sweep",
    "run_sweep": "search.sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
