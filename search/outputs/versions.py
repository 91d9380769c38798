"""Which versions wrote a sweep (versions.json), and whether this install may resume it.

Ray keeps an experiment's state in its own files and pickles (tune/), which
Ray does not keep readable across its releases: a sweep written by one Ray
minor release is resumed by the same one. Optuna's history is ftsweep's own
JSON (engine/history.py) and checkpoints are state dicts, so an Optuna,
torch or torchvision upgrade between nights is listed, not refused.
"""

from __future__ import annotations

import json
import logging
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from search.outputs.layout import VERSIONS_FILE
from trainables.errors import UserError

log = logging.getLogger(__name__)

PACKAGES = ("ftsweep", "torch", "torchvision", "ray", "optuna")


def installed() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def record(sweep_dir: Path, *, resumed: bool = False) -> None:
    """Writes versions.json: who wrote the sweep, and who resumed it since."""
    path = sweep_dir / VERSIONS_FILE
    saved = _read(path) if resumed else None
    now = installed()
    if saved is None:
        saved = {"written_by": now, "resumed_by": []}
    elif resumed:
        saved.setdefault("resumed_by", []).append(now)
    path.write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")


def _read(path: Path) -> dict | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and isinstance(saved.get("written_by"), dict) else None


def check(sweep_dir: Path) -> list[str]:
    """Compares the versions that last ran the sweep with this install.

    Returns:
        The changes (logged), ``name old -> new``; none for a sweep from before
        versions.json.

    Raises:
        UserError: another Ray minor release than the one that wrote tune/.
    """
    saved = _read(sweep_dir / VERSIONS_FILE)
    if saved is None:
        return []
    last = (saved.get("resumed_by") or [saved["written_by"]])[-1]
    now = installed()
    ray_then, ray_now = str(last.get("ray", "")), now["ray"]
    if _minor(ray_then) != _minor(ray_now):
        raise UserError(
            f"this sweep's saved state (tune/) was written by ray {ray_then}, and this is "
            f"ray {ray_now}; Ray does not keep its saved experiment readable across releases. "
            f"Resume it with ray {ray_then} (pip install 'ray[tune]=={ray_then}'), or start "
            "a new sweep; its finished trials stay readable (`ftsweep leaderboard`, "
            "`ftsweep export`)",
            str(sweep_dir / VERSIONS_FILE),
        )
    changed = [f"{k} {last.get(k)} -> {v}" for k, v in now.items() if last.get(k) not in (None, v)]
    for line in changed:
        log.warning("resuming with another version than the sweep last ran with: %s", line)
    return changed


def _minor(text: str) -> tuple[str, ...]:
    return tuple(text.split(".")[:2])
