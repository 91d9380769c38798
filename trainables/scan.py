"""The up-front scan of an ImageFolder, before any trial starts.

Every file is looked at once: hidden entries (``.DS_Store``,
``.ipynb_checkpoints``) are ignored, files that are not images and images
that cannot be decoded (truncated, corrupt, empty) are either skipped with a
warning or stop the sweep, by ``data.bad_files``. Class folders left without
images are handled the same way. What the scan found is kept, so trials never
meet a bad image mid-epoch and the user can see what was left out.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from trainables.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
BAD_FILE_POLICIES = ("skip", "fail")
SCAN_FILE = "data-scan.csv"

# What a problem is, and whether data.bad_files decides about it (hidden
# entries are always ignored: no image folder means them as data).
KINDS = {
    "unreadable": "images that cannot be decoded",
    "not_an_image": "files that are not images",
    "empty_class": "class folders without a readable image",
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


def scan_class_folders(folder: Path, root: Path, *, workers: int | None = None) -> FolderScan:
    """Lists the class folders' images, decoding each once to find the bad ones."""
    problems: list[Problem] = []

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    class_dirs = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            problems.append(Problem(rel(entry), "hidden", "ignored"))
        elif entry.is_dir():
            class_dirs.append(entry)
        else:
            problems.append(Problem(rel(entry), "not_an_image", "a file beside the class folders"))
    if not class_dirs:
        raise UserError(
            "no class folders found; an ImageFolder has one sub-folder of images per class",
            str(folder),
        )
    candidates: list[tuple[Path, str]] = []
    for class_dir in class_dirs:
        for path in _walk(class_dir, problems, rel):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                candidates.append((path, class_dir.name))
            else:
                problems.append(Problem(rel(path), "not_an_image", f"extension '{path.suffix}'"))
    with ThreadPoolExecutor(workers or min(16, (os.cpu_count() or 1) + 2)) as pool:
        # PIL releases the GIL while it decodes.
        verdicts = list(pool.map(_decode_error, [path for path, _ in candidates]))
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


def _walk(class_dir: Path, problems: list[Problem], rel: Callable[[Path], str]) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        here = Path(dirpath)
        for name in sorted(d for d in dirnames if d.startswith(".")):
            problems.append(Problem(rel(here / name), "hidden", "ignored"))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                problems.append(Problem(rel(here / name), "hidden", "ignored"))
            else:
                files.append(here / name)
    return files


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
