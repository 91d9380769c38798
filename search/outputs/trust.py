"""Whether the pickles in a sweep's tune/ folder were written by ftsweep, for this user or team.

Ray Tune keeps an experiment's state partly as pickles: tune/tuner.pkl,
each session's search_gen_state-S.json (a pickle despite its name), any
*.pkl (callback or older searcher states), and cloudpickle blobs inside
experiment_state-S.json. Unpickling runs code, so without a check a results
folder from shared storage, or one copied from a colleague, would be code
that `ftsweep resume` runs.

So every time Ray saves the state, ftsweep records a keyed digest (HMAC-
SHA256) of each of those files in tune/ftsweep-signatures.json (the last few
of each name, since Ray uploads a save's files one by one). The key lives
outside every results folder: ~/.config/ftsweep/results.key, created on
first use, or the file that FTSWEEP_RESULTS_KEY names (a team that resumes
from several machines shares one). Before a resume, each such file must
match a recorded digest; one that does not (edited, from another user, or
from before this check existed) stops the resume with exit code 2 unless
``--trust-results`` is given. Even then each pickle is first read without
being run (pickle_scan.py): every global it would import must be one of
the classes and rebuild functions Ray, Optuna and ftsweep write, so
``os.system`` and the like are refused. What passes is signed, and later
resumes need no flag.

Read-only commands (status, leaderboard, export, plot) never unpickle.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path

import pyarrow.fs

from search.outputs.pickle_scan import scan_file
from trainables.errors import UserError

KEY_ENV = "FTSWEEP_RESULTS_KEY"
SIGNATURES_FILE = "ftsweep-signatures.json"
_KEEP = 4  # digests kept per file name
# The state files of tune/: what Ray unpickles (or what holds cloudpickle blobs),
# and ftsweep's search history, which a resume restores with them.
_SIGNED = re.compile(
    r"^(?:[^.].*\.pkl|(?:experiment_state|search_gen_state|searcher-state)-.+\.json)$"
)


def key_path() -> Path:
    named = os.environ.get(KEY_ENV)
    if named:
        return Path(named).expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "ftsweep" / "results.key"


def results_key() -> bytes:
    """This user's (or team's) key; created, readable by the user only, on first use."""
    path = key_path()
    if not path.exists():
        if os.environ.get(KEY_ENV):
            raise UserError(
                f"{KEY_ENV} names a key file that does not exist; copy the team's key "
                f"there, or unset {KEY_ENV} to use this user's own key",
                str(path),
            )
        _create_key(path)
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise UserError(f"cannot read the results key ({exc.strerror})", str(path)) from None
    if len(key) < 32:
        raise UserError(
            "the results key is shorter than 32 bytes; delete the file (a new one is made) "
            "or copy the team's key there",
            str(path),
        )
    return key


def _create_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fresh = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    try:
        os.link(fresh, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        pass
    finally:
        fresh.unlink()


def _digest(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _fs(location: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if "://" in location:
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), str(Path(location).resolve())


def _pickled(fs: pyarrow.fs.FileSystem, folder: str) -> list[str]:
    selector = pyarrow.fs.FileSelector(folder, allow_not_found=True)
    return sorted(
        info.base_name
        for info in fs.get_file_info(selector)
        if info.type == pyarrow.fs.FileType.File and _SIGNED.match(info.base_name)
    )


def _read(fs: pyarrow.fs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return bytes(stream.readall())


def read_signatures(location: str) -> dict[str, list[str]]:
    """The recorded digests of ``location`` (a tune/ folder, path or URI), by file name."""
    fs, folder = _fs(location)
    try:
        found = json.loads(_read(fs, f"{folder}/{SIGNATURES_FILE}"))
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {
        name: [d for d in digests if isinstance(d, str)]
        for name, digests in found.items()
        if isinstance(digests, list)
    }


def sign(location: str, names: list[str] | None = None, *, also: str | None = None) -> None:
    """Records the digests of the pickled files in ``location`` (all, or ``names``).

    ``also``: another folder whose signatures are kept as well (Ray's
    storage, when ``location`` is the driver's staging folder it uploads).
    """
    key = results_key()
    fs, folder = _fs(location)
    signatures = read_signatures(location)
    if also is not None:
        for name, digests in read_signatures(also).items():
            signatures[name] = _merge(signatures.get(name, []), digests)
    for name in names if names is not None else _pickled(fs, folder):
        try:
            data = _read(fs, f"{folder}/{name}")
        except (FileNotFoundError, OSError):
            continue
        signatures[name] = _merge([_digest(key, data)], signatures.get(name, []))
    fresh = f"{folder}/.{SIGNATURES_FILE}.new"
    with fs.open_output_stream(fresh) as out:
        out.write(json.dumps(signatures, indent=1, sort_keys=True).encode())
    fs.move(fresh, f"{folder}/{SIGNATURES_FILE}")


def _merge(first: list[str], then: list[str]) -> list[str]:
    return list(dict.fromkeys([*first, *then]))[:_KEEP]


def signed(path: Path, signatures: dict[str, list[str]], key: bytes, name: str) -> bool:
    """Whether the file at ``path`` matches a digest recorded for ``name``."""
    try:
        return _digest(key, path.read_bytes()) in signatures.get(name, [])
    except OSError:
        return False


def verify(location: str, *, trust: bool) -> list[str]:
    """Checks every pickled file of a tune/ folder before Ray loads it.

    Returns:
        The files signed now (with ``trust``: unsigned ones whose scan passed).

    Raises:
        UserError: a file without a matching digest (and no ``trust``), or one
            whose scan finds an import outside ``allowed``.
    """
    key = results_key()
    fs, folder = _fs(location)
    signatures = read_signatures(location)
    unsigned = [
        name
        for name in _pickled(fs, folder)
        if _digest(key, _read(fs, f"{folder}/{name}")) not in signatures.get(name, [])
    ]
    if not unsigned:
        return []
    if not trust:
        listed = ", ".join(unsigned[:4])
        if len(unsigned) > 4:
            listed += f" and {len(unsigned) - 4} more"
        raise UserError(
            f"{listed} in this sweep's tune/ folder {'was' if len(unsigned) == 1 else 'were'} "
            f"not written by ftsweep with this user's key ({key_path()}). Ray unpickles these "
            "files on resume, and a pickle can run any code, so ftsweep stops here. If the "
            "sweep is yours (written before ftsweep signed its state, or on a machine with "
            f"another key: share one key file through {KEY_ENV}), resume it once with "
            "--trust-results: each file is then scanned and refused if it would import "
            "anything beyond the classes Ray, Optuna and ftsweep save",
            location,
        )
    for name in unsigned:
        problem = scan_file(name, _read(fs, f"{folder}/{name}"))  # runs nothing
        if problem:
            raise UserError(
                f"{name} {problem}; ftsweep will not resume from it, even with --trust-results. "
                "The finished trials are intact (`ftsweep leaderboard`, `ftsweep export`)",
                f"{location}/{name}",
            )
    sign(location, unsigned)
    return unsigned
