"""Where a sweep's Ray Tune experiment lives: beside its results, or on shared storage.

On a cluster, trials on every node write checkpoints, and a trial moved to
another node reads them back, so the experiment must be on storage every
node reaches: a shared filesystem path (NFS, Lustre) or a URI that pyarrow's
filesystems understand (s3://, gs://, ...). Ray Tune writes there itself
(``RunConfig.storage_path``); this module only says where, copies the
sweep's own small files beside the experiment, and brings back what the
local commands (leaderboard, status, export) read.

With ``--storage S`` the sweep ``RESULTS/NAME`` keeps its files on the
driver, Ray's experiment is ``S/NAME/tune``, and ``S/NAME`` also receives a
copy of space.yaml, split.csv, the leaderboard and best/, so that
``ftsweep resume S/NAME`` works from any machine that reaches ``S``.
``RESULTS/NAME/storage.json`` says where the experiment is; in ``S/NAME``
the same file says ``"."``: that folder is itself the shared storage.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pyarrow.fs

from search.outputs.layout import STORAGE_FILE, TUNE_DIR
from trainables.errors import UserError

log = logging.getLogger(__name__)

HERE = "."  # storage.json of a folder that is itself the shared storage
CHECKPOINT_STATE = "state.pt"  # the large file of a checkpoint: fetched only when needed
_NOT_COPIED = frozenset({TUNE_DIR, "cache", STORAGE_FILE})


def is_uri(location: str) -> bool:
    return "://" in location


def storage_location(storage: str, name: str) -> str:
    """``S/NAME`` for ``--storage S``: an absolute path, or a URI pyarrow can open.

    Raises:
        UserError: a URI scheme pyarrow does not know, or a bucket it cannot reach.
    """
    if not is_uri(storage):
        return str(Path(storage).expanduser().resolve() / name)
    location = storage.rstrip("/") + "/" + name
    _filesystem(location)
    return location


def stored_sweep(location: str) -> bool:
    """Whether ``S/NAME`` already holds a sweep's Ray Tune experiment."""
    fs, path = _filesystem(location)
    return fs.get_file_info(f"{path}/{TUNE_DIR}").type != pyarrow.fs.FileType.NotFound


def read_storage(sweep_dir: Path) -> str | None:
    """The experiment's location from RESULTS/NAME/storage.json; None: tune/ is local."""
    file = sweep_dir / STORAGE_FILE
    if not file.is_file():
        return None
    try:
        location = json.loads(file.read_text())["storage"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f'{STORAGE_FILE} is damaged ({exc}); it holds {{"storage": "PATH_OR_URI"}}, '
            "where the sweep's Ray Tune experiment is; write it again or resume from the "
            "storage location itself",
            str(file),
        ) from None
    return str(sweep_dir.resolve()) if location == HERE else str(location)


def write_storage(sweep_dir: Path, location: str) -> None:
    here = not is_uri(location) and Path(location).resolve() == sweep_dir.resolve()
    (sweep_dir / STORAGE_FILE).write_text(json.dumps({"storage": HERE if here else location}))


def experiment_root(sweep_dir: Path) -> str:
    """Ray's ``storage_path`` for the sweep: the folder that holds tune/."""
    return read_storage(sweep_dir) or str(sweep_dir.resolve())


def tune_dir(sweep_dir: Path) -> Path:
    """A local folder with the sweep's Ray Tune experiment, for commands that read it.

    Local and shared-filesystem storage is read where it is; object storage
    is copied down into RESULTS/NAME/tune first, without the checkpoints'
    weights (``local_checkpoint`` fetches one when it is needed).
    """
    location = read_storage(sweep_dir)
    if location is None:
        return sweep_dir / TUNE_DIR
    if not is_uri(location):
        return Path(location) / TUNE_DIR
    local = sweep_dir / TUNE_DIR
    _copy_tree(f"{location}/{TUNE_DIR}", local, skip_name=CHECKPOINT_STATE, download=True)
    return local


def local_checkpoint(sweep_dir: Path, checkpoint: Path) -> Path:
    """``checkpoint`` with its weights on this machine (fetched from object storage)."""
    location = read_storage(sweep_dir)
    if location is None or not is_uri(location) or (checkpoint / CHECKPOINT_STATE).is_file():
        return checkpoint
    relative = checkpoint.resolve().relative_to((sweep_dir / TUNE_DIR).resolve())
    _copy_tree(f"{location}/{TUNE_DIR}/{relative.as_posix()}", checkpoint, download=True)
    return checkpoint


def push(sweep_dir: Path) -> None:
    """Copies the sweep's own files (not tune/ or cache/) to its shared storage."""
    location = read_storage(sweep_dir)
    if location is None or (not is_uri(location) and Path(location) == sweep_dir.resolve()):
        return
    _copy_tree(str(sweep_dir), location, skip_top=_NOT_COPIED, download=False)
    _write_text(f"{location}/{STORAGE_FILE}", json.dumps({"storage": HERE}))


def pull(location: str, sweep_dir: Path) -> None:
    """Copies a stored sweep's own files into RESULTS/NAME to resume or read it here."""
    _copy_tree(location, sweep_dir, skip_top=_NOT_COPIED, download=True)
    write_storage(sweep_dir, location)


def local_sweep(location: str, results: Path) -> Path:
    """RESULTS/NAME for a sweep given as its results folder or as a storage URI,
    whose sweep files are copied there (a shared-filesystem path is used as it is)."""
    if not is_uri(location):
        return Path(location)
    sweep_dir = results / location.rstrip("/").rsplit("/", 1)[-1]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    pull(location, sweep_dir)
    return sweep_dir


def _filesystem(location: str) -> tuple[pyarrow.fs.FileSystem, str]:
    try:
        return pyarrow.fs.FileSystem.from_uri(location)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as exc:
        raise UserError(
            f"--storage {location}: pyarrow cannot open it ({exc}); give a path every node "
            "mounts (NFS, Lustre) or a URI such as s3://bucket/sweeps or gs://bucket/sweeps, "
            "with the bucket's credentials in the environment",
            location,
        ) from None


def _copy_tree(
    source: str,
    target: str | Path,
    *,
    download: bool,
    skip_top: frozenset[str] = frozenset(),
    skip_name: str | None = None,
) -> None:
    """Copies every file under ``source`` to ``target`` whose size differs there.

    ``download``: source is the storage (path or URI), target a local folder;
    otherwise the other way round.
    """
    remote_fs, remote = _filesystem(source if download else str(target))
    local_fs = pyarrow.fs.LocalFileSystem()
    src_fs, src = (remote_fs, remote) if download else (local_fs, str(Path(source).resolve()))
    dst_fs, dst = (local_fs, str(Path(target).resolve())) if download else (remote_fs, remote)
    selector = pyarrow.fs.FileSelector(src, recursive=True, allow_not_found=True)
    existing = {
        info.path: info.size
        for info in dst_fs.get_file_info(pyarrow.fs.FileSelector(dst, True, True))
        if info.type == pyarrow.fs.FileType.File
    }
    for info in src_fs.get_file_info(selector):
        relative = info.path[len(src) :].lstrip("/")
        if info.type != pyarrow.fs.FileType.File or relative.split("/")[0] in skip_top:
            continue
        if skip_name and os.path.basename(relative) == skip_name:
            continue
        destination = f"{dst}/{relative}"
        if existing.get(destination) == info.size and not relative.endswith(".json"):
            continue  # already there (json files change in place: always copied)
        dst_fs.create_dir(destination.rsplit("/", 1)[0], recursive=True)
        pyarrow.fs.copy_files(
            info.path, destination, source_filesystem=src_fs, destination_filesystem=dst_fs
        )


def _write_text(location: str, text: str) -> None:
    fs, path = _filesystem(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(text.encode())
