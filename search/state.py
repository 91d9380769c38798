"""Ray Tune's experiment state on disk: a good copy kept, damage found before resume.

Ray writes three files per run or resume ("session"): experiment_state-S.json
(the trials), searcher-state-S.pkl (the Optuna study) and
search_gen_state-S.json (how many trials were created), plus tuner.pkl once.
The experiment state is rewritten in place every few seconds, so a driver
killed mid-write (or a full disk) can leave it cut short; a file can also be
deleted by hand. Ray would then fail with a bare traceback, or, where a
searcher state is missing, silently take an older session's and re-sample
configurations it already tried.

``StateBackup`` (a Tune callback) copies each complete save to
``tune/.state-backup/``; ``repair_state`` runs before a resume: it checks the
newest session's files, puts the last good copy back where one is damaged
(keeping the damaged file as ``NAME.damaged``), and otherwise stops with an
error naming the file.
"""

from __future__ import annotations

import json
import logging
import pickletools
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from trainables.errors import UserError

log = logging.getLogger(__name__)

BACKUP_DIR = ".state-backup"
TUNER_FILE = "tuner.pkl"
# Each session's files, named by the session's start time.
SESSION_FILES = {
    "experiment state": "experiment_state-{}.json",
    "searcher state": "searcher-state-{}.pkl",
    "search generator state": "search_gen_state-{}.json",
}
_SESSION = re.compile(r"^(?:experiment_state|searcher-state|search_gen_state)-(.+)\.(?:json|pkl)$")


class StateBackup(Callback):
    """Keeps a copy of the last complete experiment-state save in tune/.state-backup/.

    Ray calls ``get_state`` of every callback at the end of each save, when
    the three state files of the save are written in full to the driver's
    staging folder; that is when they are copied.
    """

    def __init__(self) -> None:
        self._staging: Path | None = None
        self._experiment: Path | None = None

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._staging is None and trials:
            storage = trials[0].storage
            experiment = Path(storage.experiment_fs_path)
            if experiment.is_dir():  # a local results folder (not object storage)
                self._staging = Path(storage.experiment_driver_staging_path)
                self._experiment = experiment

    def get_state(self) -> dict | None:
        if self._staging is not None and self._experiment is not None:
            try:
                _copy_newest_session(self._staging, self._experiment / BACKUP_DIR)
            except OSError as exc:  # a backup must never stop the sweep
                log.warning("could not back up the experiment state: %s", exc)
        return None


def repair_state(tune_dir: Path) -> list[str]:
    """Checks the state a resume reads; restores the backup where it is damaged.

    Returns:
        What was repaired, one line each (empty when all was well).

    Raises:
        UserError: a damaged or missing file without a good copy to take its place.
    """
    tuner = tune_dir / TUNER_FILE
    problem = _damage(tuner)
    if problem:
        raise UserError(
            f"{TUNER_FILE} is {problem}; Ray Tune cannot resume without it and it has no copy. "
            "The finished trials are intact: `ftsweep leaderboard` and `ftsweep export` "
            "still work; start the remaining search as a new sweep with `ftsweep run`",
            str(tuner),
        )
    session = _newest_session(tune_dir)
    if session is None:
        return []
    damaged = {
        name.format(session): problem
        for name in SESSION_FILES.values()
        if (problem := _damage(tune_dir / name.format(session)))
    }
    if not damaged:
        return []
    backup = tune_dir / BACKUP_DIR
    if not backup.is_dir():  # killed between the two renames of a backup swap
        backup = tune_dir / f"{BACKUP_DIR}.old"
    backup_session = _newest_session(backup) if backup.is_dir() else None
    usable = backup_session is not None and not any(
        _damage(backup / name.format(backup_session)) for name in SESSION_FILES.values()
    )
    first, why = next(iter(damaged.items()))
    if not usable:
        raise UserError(
            f"Ray Tune's saved state {first} is {why}, and there is no good copy of it in "
            f"{BACKUP_DIR}/ to resume from. The finished trials are intact (`ftsweep "
            "leaderboard`, `ftsweep export`); start the remaining search as a new sweep",
            str(tune_dir / first),
        )
    assert backup_session is not None
    age = time.time() - max(p.stat().st_mtime for p in backup.iterdir())
    lines = []
    for name in SESSION_FILES.values():
        target = tune_dir / name.format(session)
        if target.exists():
            target.replace(target.with_name(target.name + ".damaged"))
    for name in SESSION_FILES.values():
        shutil.copy2(backup / name.format(backup_session), tune_dir / name.format(backup_session))
    for name, why in damaged.items():
        lines.append(
            f"{name} was {why}; resuming from the copy saved {age:.0f} s before it "
            f"(the damaged file is kept as {name}.damaged)"
        )
    for line in lines:
        log.warning("%s", line)
    return lines


def _damage(path: Path) -> str | None:
    """None if the file reads in full; else what is wrong with it. Never unpickles."""
    if not path.is_file():
        return "missing"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not data:
        return "empty"
    if path.name.startswith("experiment_state"):
        try:
            json.loads(data)
        except ValueError:
            return f"cut short or corrupt (not valid JSON, {len(data)} bytes)"
        return None
    try:  # Ray's .pkl (and search_gen_state .json) files are pickles: walk the opcodes only
        for _ in pickletools.genops(data):
            pass
    except Exception:
        return f"cut short or corrupt (an incomplete pickle, {len(data)} bytes)"
    return None


def _newest_session(folder: Path) -> str | None:
    sessions = {m.group(1) for p in folder.iterdir() if (m := _SESSION.match(p.name))}
    return max(sessions) if sessions else None


def _copy_newest_session(staging: Path, backup: Path) -> None:
    session = _newest_session(staging)
    if session is None:
        return
    names = [name.format(session) for name in SESSION_FILES.values()]
    if any(_damage(staging / name) for name in names):
        return  # not a complete save (yet)
    fresh = backup.with_name(backup.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    for name in names:
        shutil.copy2(staging / name, fresh / name)
    old = backup.with_name(backup.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if backup.exists():
        backup.rename(old)
    fresh.rename(backup)
    shutil.rmtree(old, ignore_errors=True)


def add_trials(tune_dir: Path, count: int) -> int:
    """Raises the number of trials Ray's restored search will create by ``count``.

    Ray Tune cannot change ``num_samples`` on restore: the search generator
    restores its own total from search_gen_state. That total (a documented
    part of SearchGenerator.get_state) is raised in the newest saved state,
    written back atomically; the Optuna study is untouched, so the new trials
    are sampled with every earlier result in its history.

    Returns:
        The new total number of trials.
    """
    import ray.cloudpickle as cloudpickle

    session = _newest_session(tune_dir)
    path = tune_dir / SESSION_FILES["search generator state"].format(session)
    if session is None or _damage(path):
        raise UserError(
            "no saved search state to extend; resume the sweep without --add first", str(path)
        )
    state = cloudpickle.loads(path.read_bytes())  # Ray's own file; Ray loads it the same way
    if not isinstance(state, dict) or not {"counter", "total_samples", "finished"} <= set(state):
        raise UserError(
            "this search state was written by a Ray version whose format ftsweep does not "
            "know; --add cannot extend it (start a new sweep with more trials instead)",
            str(path),
        )
    state["total_samples"] = max(int(state["total_samples"]), int(state["counter"])) + count
    state["finished"] = False
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_bytes(cloudpickle.dumps(state))
    fresh.replace(path)
    return int(state["total_samples"])


def rebase_search_state(tune_dir: Path) -> bool:
    """Points the trials a resumed search will create at where the experiment is now.

    Ray re-roots the trials it restores to the folder ``Tuner.restore`` is
    given, but the search generator restores the run's Experiment from its
    own saved state, with the storage of the first run: a moved or copied
    experiment would put its new trials in the old folder. The newest saved
    state gets the current folder (Ray's own file, written back atomically).

    Returns:
        Whether the state named another folder and was changed.
    """
    import pyarrow.fs
    import ray.cloudpickle as cloudpickle

    session = _newest_session(tune_dir)
    path = tune_dir / SESSION_FILES["search generator state"].format(session)
    if session is None or _damage(path):
        return False
    state = cloudpickle.loads(path.read_bytes())
    storage = getattr(state.get("experiment"), "storage", None) if isinstance(state, dict) else None
    here = tune_dir.resolve()
    if storage is None or Path(storage.experiment_fs_path) == here:
        return False
    storage.storage_filesystem = pyarrow.fs.LocalFileSystem()
    storage.storage_fs_path = str(here.parent)
    storage.experiment_dir_name = here.name
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_bytes(cloudpickle.dumps(state))
    fresh.replace(path)
    log.info("the experiment was moved: new trials go to %s", here)
    return True
