"""Every read or edit of Ray Tune's saved files, in one module.

Long: one module on purpose, so that a Ray release that changes its files
changes this file only.

Ray writes an experiment into RESULTS/NAME/tune/ (docs/SPEC.md): per trial a
folder trial_ID with params.json (the config), result.json (one JSON line per
report), error.txt (tracebacks, "Failure # N" per restart) and checkpoint_N/
folders; per run or resume ("session") experiment_state-S.json (the trials),
searcher-state-S.json (the Optuna study as ftsweep's JSON, engine/history.py;
searcher-state-S.pkl, Ray's pickle, in sweeps from before) and
search_gen_state-S.json (how many trials were created), plus tuner.pkl once.
Nothing else in ftsweep opens these files; a Ray release that changes them
is handled here (and listed in search/engine/__init__.py).

The experiment state is rewritten in place every few seconds, so a driver
killed mid-write (or a full disk) can leave it cut short; a file can also be
deleted by hand. Ray would then fail with a bare traceback, or, where a
searcher state is missing, silently take an older session's and re-sample
configurations it already tried. ``StateBackup`` (engine/state_backup.py)
copies each complete save to ``tune/.state-backup/``; ``repair_state`` runs
before a resume: it checks the newest session's files, puts the last good
copy back where one is damaged (keeping the damaged file as
``NAME.damaged``), and otherwise stops with an error naming the file.
"""

from __future__ import annotations

import json
import logging
import pickletools
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs

from search.outputs import trust
from search.outputs.layout import ASHA_STOPS_FILE
from search.outputs.storage import tune_dir
from trainables import hparams as hp
from trainables.checkpoint_files import META_FILE
from trainables.errors import UserError

log = logging.getLogger(__name__)

BACKUP_DIR = ".state-backup"
TUNER_FILE = "tuner.pkl"
# Each session's files, named by the session's start time.
SESSION_FILES = {
    "experiment state": "experiment_state-{}.json",
    "searcher state": "searcher-state-{}.json",
    "search generator state": "search_gen_state-{}.json",
}
_SESSION = re.compile(r"^(?:experiment_state|searcher-state|search_gen_state)-(.+)\.(?:json|pkl)$")


def prepare_resume(experiment: str, *, trusted: bool) -> None:
    """Before a resume, in this order: a damaged save is repaired from its copy
    (a local folder); trust.verify (nothing of tune/ is unpickled, by Ray or
    ftsweep, unless ftsweep signed it or it is trusted); a moved experiment
    is rebased. A newest save that is complete but not signed (a driver
    killed between Ray's write and the signing) is replaced by its copy when
    the copy is signed."""
    local = "://" not in experiment and Path(experiment).is_dir()
    if local:
        key, signatures = trust.results_key(), trust.read_signatures(experiment)
        repair_state(
            Path(experiment), None if trusted else lambda p, n: trust.signed(p, signatures, key, n)
        )
    trust.verify(experiment, trust=trusted)
    if local:
        rebase_search_state(Path(experiment))  # moved or copied since it ran


def sign_tuner(experiment: str) -> None:
    """Records tuner.pkl as ftsweep's: Ray wrote it (or, restoring, read it) just now."""
    trust.sign(experiment, [TUNER_FILE])


def repair_state(tune_dir: Path, signed: Callable[[Path, str], bool] | None = None) -> list[str]:
    """Checks the state a resume reads; restores the backup where it is damaged.

    ``signed(path, name)``: whether a file is ftsweep's (outputs/trust.py).
    With it, a newest save whose files are complete but not all signed (a
    driver killed between Ray's write and the signing, or an edit) is
    replaced by the backup where the backup's files are all signed; where
    they are not, it is left for trust.verify to refuse.

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

    def state_problem(folder: Path, name: str) -> str | None:
        found = _damage(folder / name)
        if found is None and signed is not None and not signed(folder / name, name):
            return "not signed by ftsweep"
        return found

    damaged = {
        name: why
        for name in _session_names(tune_dir, session)
        if (why := state_problem(tune_dir, name))
    }
    if not damaged:
        return []
    backup = tune_dir / BACKUP_DIR
    if not backup.is_dir():  # killed between the two renames of a backup swap
        backup = tune_dir / f"{BACKUP_DIR}.old"
    backup_session = _newest_session(backup) if backup.is_dir() else None
    usable = backup_session is not None and not any(
        state_problem(backup, name) for name in _session_names(backup, backup_session)
    )
    first, why = next(iter(damaged.items()))
    if not usable and all(w == "not signed by ftsweep" for w in damaged.values()):
        return []  # complete files: trust.verify names them and the way on
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
    for name in _session_names(tune_dir, session):
        target = tune_dir / name
        if target.exists():
            target.replace(target.with_name(target.name + ".damaged"))
    for name in _session_names(backup, backup_session):
        shutil.copy2(backup / name, tune_dir / name)
    for name, why in damaged.items():
        lines.append(
            f"{name} was {why}; resuming from the copy saved {age:.0f} s before it "
            f"(the file is kept as {name}.damaged)"
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
    if path.name.startswith(("experiment_state", "searcher-state")) and path.suffix == ".json":
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


def _session_names(folder: Path, session: str) -> list[str]:
    """The files of one save: a sweep from before ftsweep's JSON search history
    has Ray's pickled searcher-state-S.pkl in its place."""
    names = [name.format(session) for name in SESSION_FILES.values()]
    searcher = SESSION_FILES["searcher state"].format(session)
    legacy = searcher.removesuffix(".json") + ".pkl"
    if not (folder / searcher).exists() and (folder / legacy).exists():
        names[names.index(searcher)] = legacy
    return names


def _newest_session(folder: Path) -> str | None:
    sessions = {m.group(1) for p in folder.iterdir() if (m := _SESSION.match(p.name))}
    return max(sessions) if sessions else None


def copy_newest_session(staging: Path, backup: Path) -> None:
    session = _newest_session(staging)
    if session is None:
        return
    names = _session_names(staging, session)
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
    # Ray loads it the same way; resume_sweep ran trust.verify on it first.
    state = cloudpickle.loads(path.read_bytes())
    if not isinstance(state, dict) or not {"counter", "total_samples", "finished"} <= set(state):
        raise UserError(
            "this search state was written by a Ray version whose format ftsweep does not "
            "know; --add cannot extend it (start a new sweep with more trials instead)",
            str(path),
        )
    state["total_samples"] = max(int(state["total_samples"]), int(state["counter"])) + count
    state["finished"] = False
    write_signed(path, cloudpickle.dumps(state))
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
    import ray.cloudpickle as cloudpickle

    session = _newest_session(tune_dir)
    path = tune_dir / SESSION_FILES["search generator state"].format(session)
    if session is None or _damage(path):
        return False
    state = cloudpickle.loads(path.read_bytes())  # trust.verify passed it (resume_sweep)
    storage = getattr(state.get("experiment"), "storage", None) if isinstance(state, dict) else None
    here = tune_dir.resolve()
    if storage is None or Path(storage.experiment_fs_path) == here:
        return False
    storage.storage_filesystem = pyarrow.fs.LocalFileSystem()
    storage.storage_fs_path = str(here.parent)
    storage.experiment_dir_name = here.name
    write_signed(path, cloudpickle.dumps(state))
    log.info("the experiment was moved: new trials go to %s", here)
    return True


def write_signed(path: Path, data: bytes) -> None:
    """Replaces Ray's file atomically, and records it as ftsweep's (trust.py)."""
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_bytes(data)
    fresh.replace(path)
    trust.sign(str(path.parent), [path.name])


def write_asha_stops(experiment_dir: str, fs: pyarrow.fs.FileSystem, stops: dict[str, int]) -> None:
    """Records which trials ASHA stopped, and at which epoch (ftsweep's file, not Ray's).

    The leaderboard tells them from trials the time budget cut short by it:
    both end TERMINATED short of max_epochs in Ray's state. Written whole to
    a temporary name and moved into place, on local or object storage alike.
    """
    path = f"{experiment_dir.rstrip('/')}/{ASHA_STOPS_FILE}"
    fresh = f"{experiment_dir.rstrip('/')}/.{ASHA_STOPS_FILE}.new"
    with fs.open_output_stream(fresh) as stream:
        stream.write(json.dumps(dict(sorted(stops.items())), indent=1).encode())
    fs.move(fresh, path)


def asha_stops(sweep_dir: Path) -> dict[str, int] | None:
    """Trial id -> epoch ASHA stopped it at; None for a sweep that never recorded them
    (no ASHA, or a sweep from before the record was kept)."""
    stops = read_json(tune_dir(sweep_dir) / ASHA_STOPS_FILE)
    if not isinstance(stops, dict):
        return None
    return {str(k): v for k, v in stops.items() if isinstance(v, int) and not isinstance(v, bool)}


def stored_results(
    experiment_dir: str, fs: pyarrow.fs.FileSystem, metric: str, time_attr: str
) -> list[tuple[str, dict[str, Any]]]:
    """(trial id, result) of every stored result holding ``metric`` and ``time_attr``,
    in the order they were reported (ASHA's replay). Lines cut short by a kill are skipped.
    """
    results = []
    for trial_id, text in _result_files(experiment_dir, fs):
        for line in text.splitlines():
            try:
                result = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if metric in result and time_attr in result:
                results.append((result.get(hp.REPORTED_AT, 0.0), trial_id, result))
    return [(trial_id, result) for _, trial_id, result in sorted(results, key=lambda r: r[0])]


def _result_files(root: str, fs: pyarrow.fs.FileSystem) -> list[tuple[str, str]]:
    """(trial id, text of its result.json) for every trial folder of an experiment."""
    files = []
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)):
        name = info.path.rstrip("/").rsplit("/", 1)[-1]
        if info.type != pyarrow.fs.FileType.Directory or not name.startswith("trial_"):
            continue
        try:
            with fs.open_input_stream(f"{info.path}/result.json") as stream:
                files.append((name.removeprefix("trial_"), stream.read().decode(errors="replace")))
        except (FileNotFoundError, OSError):
            continue  # a trial that has not reported yet
    return files


def ray_trials(sweep_dir: Path) -> dict[str, tuple[str, int]]:
    """Each trial's (status, failures) in Ray Tune's newest experiment state.

    Status is RUNNING, TERMINATED, ERROR, ...; failures counts the times Ray
    restarted the trial from its checkpoint. Empty when there is no readable
    state yet; callers fall back to what the trial folders say.
    """
    # Named by the start time of each run or resume; their mtimes tie after a sync.
    states = sorted(tune_dir(sweep_dir).glob("experiment_state-*.json"))
    data = read_json(states[-1]) if states else None
    trials = {}
    for entry in (data or {}).get("trial_data", []):
        try:
            trial = json.loads(entry[0])
            metadata = json.loads(entry[1]) if len(entry) > 1 else {}
            failures = int(metadata.get("num_failures") or 0)
            trials[str(trial["trial_id"])] = (str(trial["status"]), failures)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue
    return trials


def ray_statuses(sweep_dir: Path) -> dict[str, str]:
    """Each trial's status in Ray Tune's newest experiment state (see ray_trials)."""
    return {trial: status for trial, (status, _) in ray_trials(sweep_dir).items()}


@dataclass(frozen=True)
class TrialRecord:
    """What a trial's folder says about it."""

    trial_id: str
    path: Path
    config: dict[str, Any]
    results: list[dict[str, Any]]
    error: str | None
    failures: int  # "Failure # N" entries Ray wrote to error.txt


def read_trials(sweep_dir: Path) -> list[TrialRecord]:
    records = []
    for path in sorted(tune_dir(sweep_dir).glob("trial_*")):
        if not path.is_dir():
            continue
        config = trial_config(path)
        results = _read_results(path / "result.json")
        error_file = path / "error.txt"
        error, failures = None, 0
        if error_file.is_file():
            text = error_file.read_text(errors="replace")
            error = error_line(text)
            failures = len(re.findall(r"^Failure # \d+", text, flags=re.MULTILINE))
        records.append(
            TrialRecord(path.name.removeprefix("trial_"), path, config, results, error, failures)
        )
    return records


# The last "module.ClassName: message" line of a traceback that Ray wrote.
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)\w*): ?(.*)$")


def error_line(text: str) -> str:
    """One line for the leaderboard from a trial's error.txt: the last failure's exception."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match:
            name, message = match.groups()
            if name in ("TrialOutOfMemoryError", "OutOfMemoryError"):
                # Ours already reads "out of memory (...): ..."; torch's is CUDA's text.
                if not message.startswith("out of memory"):
                    message = f"out of memory: {message}"
                return message[:300]
            return f"{name}: {message}"[:300]
    return (lines[-1] if lines else "error")[:300]


def best_checkpoint(trial_dir: Path, metric: str, mode: str) -> str | None:
    """The kept checkpoint with the best value of the metric."""
    scored = []
    for meta in trial_dir.glob(f"checkpoint_*/{META_FILE}"):
        values = read_json(meta)
        if values and metric in values:
            scored.append((values[metric], -values[hp.EPOCH], str(meta.parent)))
    if not scored:
        return None
    best = max(scored) if mode == "max" else min(scored, key=lambda s: (s[0], -s[1]))
    return best[2]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    by_epoch: dict[Any, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            result = json.loads(line)
        except ValueError:
            continue  # a line cut short by an interrupted write
        # After a killed driver an epoch may be trained and reported again
        # from the last saved checkpoint; the later report is the one kept.
        by_epoch[result.get(hp.EPOCH, len(by_epoch))] = result
    return [by_epoch[k] for k in sorted(by_epoch, key=lambda e: (e is None, e))]


def trial_config(trial_dir: Path) -> dict[str, Any]:
    """The configuration Ray gave a trial (its params.json); empty when unreadable."""
    return read_json(trial_dir / "params.json") or {}


def trial_error(error_file: str | None) -> str:
    """The one-line error of a trial Ray errored, from its error file."""
    if error_file and Path(error_file).is_file():
        return error_line(Path(error_file).read_text(errors="replace"))
    return "an error (see the trial's error.txt)"
