"""ftsweep: search for the best way to fine-tune a pre-trained image classifier."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from search import _legacy

_legacy.install()  # sweeps written before search/ had packages still unpickle

# Imported on first use, so that a command which only reads a results folder
# (leaderboard, status, plot) does not import Ray.
_EXPORTS = {
    "FineTunedModel": "search.model.loading",
    "export_trial": "search.model.export",
    "load_model": "search.model.loading",
    "Space": "search.space.loader",
    "load_space": "search.space.loader",
    "SweepResult": "search.sweep",
    "resume_sweep": "search.sweep",
    "run_sweep": "search.sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
