"""The sweep's images, decoded once per node and shared by every trial there.

Before the first trial starts, the driver decodes and resizes every image of
split.csv into one uint8 file, ``RESULTS/NAME/cache/images-<size>px-<key>.u8``
(N x 3 x S x S in split.csv's row order). Each trial maps that file
read-only (``torch.from_file``): all trials of a node read the same pages of
the operating system's page cache, so the data set sits in memory once
however many trials run, nothing is copied into a trial, and a resumed sweep
does not decode again. A trial on a node where the file is missing (another
machine of a cluster) builds it there under a file lock: the first trial of
each node decodes, the others wait for it and then map it.

A data set whose cache would be larger than ``data.cache_budget`` is not
cached: its trials decode and resize the images every epoch, in DataLoader
worker processes (streaming from disk). Augmentation runs on the uint8
batches in both cases, on the trial's device (trainables/augment.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainables.errors import UserError

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
AUTO = "auto"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_opened: dict[str, torch.Tensor] = {}  # per process: a reused actor maps the file once


@dataclass(frozen=True)
class CacheFile:
    """Where a sweep's decoded images live on a node, and what they must be."""

    path: str  # the .u8 file; its .json sidecar is written last, when the file is complete
    key: str  # split.csv, data root and image size, hashed
    count: int  # images, in split.csv's row order
    image_size: int

    @property
    def nbytes(self) -> int:
        return image_bytes(self.count, self.image_size)

    def is_complete(self) -> bool:
        meta = Path(self.path).with_suffix(".json")
        try:
            found = json.loads(meta.read_text())
        except (OSError, ValueError):
            return False
        return (
            found.get("key") == self.key
            and os.path.getsize(self.path) == self.nbytes
            and found.get("count") == self.count
        )


def image_bytes(count: int, image_size: int) -> int:
    """Bytes of ``count`` uint8 RGB images of ``image_size`` squared."""
    return count * 3 * image_size * image_size


def parse_budget(value: object, where: str = "data.cache_budget") -> int | None:
    """``auto`` (None: half this machine's memory), bytes, or "16GB", "512MiB", "0"."""
    if value is None or value == AUTO:
        return None
    if isinstance(value, bool):
        raise UserError(f"{where} takes auto, a number of bytes or a size such as 16GB", where)
    if isinstance(value, int | float):
        if value < 0:
            raise UserError(f"{where} cannot be negative; 0 turns the cache off", where)
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise UserError(
            f"{where} must be auto, a number of bytes, or a size such as 16GB or 512MB "
            f"(0 turns the cache off), not {value!r}",
            where,
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()[:1]])


def memory_budget(budget: int | None) -> int:
    """The budget in bytes; ``None`` is half of this machine's physical memory."""
    if budget is not None:
        return budget
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):  # not a POSIX system
        return 8 * 2**30


def plan_cache(
    split_csv: Path, data_root: str | None, image_size: int, cache_dir: Path, budget: int | None
) -> CacheFile | None:
    """The cache file (in ``cache_dir``) a sweep's trials share on each node, or None
    when it exceeds the memory budget."""
    content = split_csv.read_bytes()
    count = len(pd.read_csv(io.BytesIO(content), usecols=["path"]))
    if image_bytes(count, image_size) > memory_budget(budget):
        return None
    key = hashlib.sha256(content + f"\0{data_root or ''}\0{image_size}".encode()).hexdigest()[:16]
    path = cache_dir.resolve() / f"images-{image_size}px-{key}.u8"
    return CacheFile(str(path), key, count, image_size)


def ensure_cache(
    cache: CacheFile,
    frame: pd.DataFrame,
    decode: Callable[[str], torch.Tensor],
    *,
    workers: int | None = None,
) -> int:
    """Builds the cache file on this node unless it is there; returns images decoded.

    Safe to call from every trial at once: a file lock lets the first build
    it while the others wait, and the file counts only once its sidecar
    names its key (a build cut off by a kill is started again).
    """
    if cache.is_complete():
        return 0
    path = Path(cache.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_suffix(".lock")):
        if cache.is_complete():  # another trial built it while this one waited
            return 0
        tic = time.perf_counter()
        partial = path.with_suffix(".partial")
        size = cache.image_size
        images = np.memmap(partial, mode="w+", dtype=np.uint8, shape=(cache.count, 3, size, size))
        items = frame["path"].tolist()

        def put(index: int) -> None:
            images[index] = decode(items[index]).numpy()

        # PIL and torch's resize release the GIL while they work.
        with ThreadPoolExecutor(workers or min(32, (os.cpu_count() or 1) + 2)) as pool:
            list(pool.map(put, range(cache.count)))
        images.flush()
        os.replace(partial, path)
        meta = {"key": cache.key, "count": cache.count, "image_size": size}
        path.with_suffix(".json").write_text(json.dumps(meta))
        log.info(
            "decoded %d images at %d px into %s (%.0f MiB) in %.1f s",
            cache.count,
            size,
            path,
            cache.nbytes / 2**20,
            time.perf_counter() - tic,
        )
        return cache.count


def open_cache(cache: CacheFile) -> torch.Tensor:
    """The cached images as an N x 3 x S x S uint8 tensor mapped from the file.

    The mapping is private and read-only in use: pages come from the page
    cache every process on the node shares, and are never copied.
    """
    tensor = _opened.get(cache.path)
    if tensor is None:
        if not cache.is_complete():
            raise RuntimeError(f"the image cache {cache.path} is incomplete; it is rebuilt")
        flat = torch.from_file(cache.path, shared=False, size=cache.nbytes, dtype=torch.uint8)
        size = cache.image_size
        tensor = flat.view(cache.count, 3, size, size)
        _opened.clear()  # a reused actor of another sweep lets go of the old one
        _opened[cache.path] = tensor
    return tensor


@contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
