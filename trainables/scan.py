"""The up-front scan of an ImageFolder, before any trial starts.

Every file is looked at once: hidden entries (``.DS_Store``,
``.ipynb_checkpoints``) are ignored, files that are not images and images
that cannot be decoded (truncated, corrupt, empty) are either skipped with a
warning or stop the sweep, by ``data.bad_files``. Class folders left without
images, folders that cannot be read, pipes and devices, and links that leave
the data folder or reach a file or folder a second time (a link loop, one
image under two classes) are handled the same way: each file and folder is
taken once, by device and inode, and only regular files are opened, each
within ``FILE_TIMEOUT_S``. What the scan found is kept, so trials never meet
a bad image mid-epoch and the user can see what was left out.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from trainables.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
BAD_FILE_POLICIES = ("skip", "fail")
SCAN_FILE = "data-scan.csv"
FILE_TIMEOUT_S = 30.0  # a file that takes longer to read (a stalled network mount) is left out

# What a problem is, and whether data.bad_files decides about it (hidden
# entries are always ignored: no image folder means them as data).
KINDS = {
    "unreadable": "images that cannot be decoded",
    "not_an_image": "files that are not images",
    "empty_class": "class folders without a readable image",
    "unreadable_folder": "folders that cannot be read",
    "not_a_file": "pipes, sockets or devices",
    "link": "links out of the data folder or to a file or folder already scanned",
    "hidden": "hidden files and folders (ignored)",
}
SHOWN = 5  # paths listed per kind in a message


@dataclass(frozen=True)
class Problem:
    """One file or folder the scan did not take, and why."""

    path: str  # relative to the data root
    kind: str  # a key of KINDS
    detail: str


@dataclass(frozen=True)
class FolderScan:
    """The usable images of one folder of class folders, and what was left out."""

    items: pd.DataFrame  # columns path (relative to the root), label
    problems: list[Problem]


@dataclass
class Seen:
    """What a scan of one data folder has taken, by (device, inode): a file or
    folder is taken once, however many paths (links) lead to it."""

    root: Path  # the data folder, resolved: links may not leave it
    folders: set[tuple[int, int]] = field(default_factory=set)
    files: dict[tuple[int, int], str] = field(default_factory=dict)


def scan_class_folders(
    folder: Path, root: Path, *, workers: int | None = None, seen: Seen | None = None
) -> FolderScan:
    """Lists the class folders' images, decoding each once to find the bad ones.

    ``seen``: shared by the scans of one data folder (train/, val/, test/),
    so that no file is taken in two of them.
    """
    problems: list[Problem] = []
    seen = seen or Seen(root.resolve())
    for start in (root, folder):  # a link back up is a loop, not more images
        info = start.stat()
        seen.folders.add((info.st_dev, info.st_ino))

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    class_dirs = []
    taken = _entries(folder, seen, problems, rel)
    if taken is None:
        raise UserError("this folder cannot be read; check its permissions", str(folder))
    for path, is_dir, _ in taken:
        if is_dir:
            class_dirs.append(path)
        else:
            problems.append(Problem(rel(path), "not_an_image", "a file beside the class folders"))
    if not class_dirs:
        raise UserError(
            "no class folders found; an ImageFolder has one sub-folder of images per class",
            str(folder),
        )
    found_under: dict[tuple[int, int], list[tuple[Path, str]]] = {}
    for class_dir in class_dirs:
        for path, key in _walk(class_dir, seen, problems, rel):
            found_under.setdefault(key, []).append((path, class_dir.name))
    candidates: list[tuple[Path, str]] = []
    for key, places in found_under.items():
        labels = sorted({label for _, label in places})
        if len(labels) > 1:  # which class it belongs to, only the user can say
            for path, _ in places:
                problems.append(Problem(rel(path), "link", f"one file in classes {labels}"))
            continue
        (path, label), *others = places
        problems += [Problem(rel(p), "link", f"the same file as {rel(path)}") for p, _ in others]
        seen.files[key] = rel(path)
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            candidates.append((path, label))
        else:
            problems.append(Problem(rel(path), "not_an_image", f"extension '{path.suffix}'"))
    verdicts = decode_all([path for path, _ in candidates], workers)
    rows = []
    for (path, label), error in zip(candidates, verdicts, strict=True):
        if error is None:
            rows.append((rel(path), label))
        else:
            problems.append(Problem(rel(path), "unreadable", error))
    items = pd.DataFrame(rows, columns=["path", "label"])
    found = Counter(items["label"])
    for class_dir in class_dirs:
        if not found[class_dir.name]:
            problems.append(
                Problem(rel(class_dir), "empty_class", f"no readable images ({_listing()})")
            )
    return FolderScan(items, problems)


def decode_all(paths: list[Path], workers: int | None) -> list[str | None]:
    """Each file's decode error (None: it decodes), each given FILE_TIMEOUT_S."""
    pool = ThreadPoolExecutor(workers or min(16, (os.cpu_count() or 1) + 2))
    try:  # PIL releases the GIL while it decodes.
        futures = [pool.submit(_decode_error, path) for path in paths]
        verdicts: list[str | None] = []
        for future in futures:
            try:
                verdicts.append(future.result(timeout=FILE_TIMEOUT_S))
            except FutureTimeout:
                verdicts.append(f"not read within {FILE_TIMEOUT_S:g} s")
        return verdicts
    finally:  # a read that never returns is left behind, not waited for
        pool.shutdown(wait=False, cancel_futures=True)


def apply_policy(problems: list[Problem], policy: str, root: str) -> None:
    """Warns about what is skipped, or stops with one paragraph listing it all."""
    counts = Counter(p.kind for p in problems)
    hidden = counts.pop("hidden", 0)
    if hidden:
        log.info("data: ignored %d hidden files or folders in %s", hidden, root)
    if not counts:
        return
    listing = "; ".join(
        f"{n} {KINDS[kind]} ({_examples(problems, kind)})" for kind, n in counts.items()
    )
    if policy == "fail":
        raise UserError(
            f"the data scan found {listing}. Fix or remove them, or set data.bad_files: skip "
            f"to train without them (a sweep then lists them in RESULTS/NAME/{SCAN_FILE})",
            root,
        )
    log.warning("data: skipping %s (all listed in %s)", listing, SCAN_FILE)


def problems_frame(problems: list[Problem]) -> pd.DataFrame:
    return pd.DataFrame(
        [(p.path, p.kind, p.detail) for p in problems], columns=["path", "problem", "detail"]
    )


def _walk(
    class_dir: Path, seen: Seen, problems: list[Problem], rel: Callable[[Path], str]
) -> list[tuple[Path, tuple[int, int]]]:
    """Each regular file under ``class_dir`` with its (device, inode), depth
    first in name order, each folder entered once."""
    files = []
    stack = [class_dir]
    while stack:
        here = stack.pop()
        taken = _entries(here, seen, problems, rel)
        if taken is None:
            continue
        files += [(path, key) for path, is_dir, key in taken if not is_dir]
        stack += reversed([path for path, is_dir, _ in taken if is_dir])
    return files


def _entries(
    folder: Path, seen: Seen, problems: list[Problem], rel: Callable[[Path], str]
) -> list[tuple[Path, bool, tuple[int, int]]] | None:
    """(path, is a folder, (device, inode)) of each entry of ``folder`` to take,
    in name order; None when the folder cannot be read. Everything else is a
    Problem. A file another scan of the data folder took is left out here."""
    try:
        names = sorted(entry.name for entry in os.scandir(folder))
    except OSError as exc:
        problems.append(Problem(rel(folder), "unreadable_folder", exc.strerror or str(exc)))
        return None
    taken = []
    for name in names:
        path = folder / name
        if name.startswith("."):
            problems.append(Problem(rel(path), "hidden", "ignored"))
            continue
        try:
            if path.is_symlink() and not path.resolve(strict=True).is_relative_to(seen.root):
                problems.append(
                    Problem(rel(path), "link", f"leads out of the data folder, to {path.resolve()}")
                )
                continue
            info = path.stat()  # where a link leads
        except (OSError, RuntimeError) as exc:  # a broken link, a loop of links
            problems.append(Problem(rel(path), "link", f"cannot be followed ({exc})"[:200]))
            continue
        key = (info.st_dev, info.st_ino)
        if stat.S_ISDIR(info.st_mode):
            if key in seen.folders:
                problems.append(
                    Problem(rel(path), "link", "a folder already scanned (a link loop?)")
                )
            else:
                seen.folders.add(key)
                taken.append((path, True, key))
        elif not stat.S_ISREG(info.st_mode):  # opening a pipe would wait forever
            problems.append(Problem(rel(path), "not_a_file", "a pipe, socket or device"))
        elif key in seen.files:
            problems.append(Problem(rel(path), "link", f"the same file as {seen.files[key]}"))
        else:
            taken.append((path, False, key))
    return taken


def _decode_error(path: Path) -> str | None:
    """None if the image decodes completely; else why not, in a few words."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and palette warnings are not faults
            with Image.open(path) as image:
                image.draft("RGB", (64, 64))  # JPEG: decode at a reduced scale, all of it
                image.load()
                if image.width < 1 or image.height < 1:
                    return "has no pixels"
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBomb...
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return text[:200]
    return None


def _examples(problems: list[Problem], kind: str) -> str:
    paths = [p.path for p in problems if p.kind == kind]
    shown = ", ".join(paths[:SHOWN])
    return shown + (f", and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def _listing() -> str:
    return ", ".join(IMAGE_EXTENSIONS)
