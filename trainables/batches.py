"""A trial's images, served as uint8 batches from the node's cache or from disk.

``open_splits`` gives each split as ``SplitImages``: with the cache
(trainables/cache.py) a batch is gathered from the mapped file; without it
(a data set over ``data.cache_budget``) DataLoader workers decode the files
every epoch. Either way a background thread prepares the next batch (and
pins it for the GPU) while the current one trains.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from trainables.cache import CacheFile, ensure_cache, open_cache
from trainables.data import SPLITS, classes_of, item_decoder

Batch = tuple[torch.Tensor, torch.Tensor]  # uint8 NCHW images, int64 labels
PREFETCH = 2  # batches prepared ahead of the one training


class SplitImages(Protocol):
    labels: torch.Tensor

    def __len__(self) -> int: ...

    def batches(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        balanced: bool = False,
    ) -> Iterable[Batch]:
        """One pass in batches: shuffled with ``generator``, else in order;
        ``balanced``: as many images drawn (with ``generator``, with replacement),
        each class equally likely."""
        ...


class CachedImages:
    """One split's rows of the node's cache file."""

    def __init__(self, images: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, pin: bool):
        self.images, self.rows, self.labels, self.pin = images, rows, labels, pin

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def batches(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        balanced: bool = False,
    ) -> Iterable[Batch]:
        order = _order(self.labels, generator, balanced)
        stop = len(order) - (len(order) % batch_size if drop_last else 0)

        def gather(start: int) -> Batch:
            picked = order[start : start + batch_size]
            images = self.images.index_select(0, self.rows[picked])
            return (images.pin_memory() if self.pin else images), self.labels[picked]

        return prefetch(gather(start) for start in range(0, stop, batch_size))


class FileImages(Dataset[tuple[torch.Tensor, int]]):
    """Images decoded from their files on every access (no cache)."""

    def __init__(self, items: list[str], decode: Callable[[str], torch.Tensor]) -> None:
        self.items, self.decode = items, decode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.decode(self.items[index]), index


class StreamedImages:
    """One split decoded every pass by DataLoader workers (data over the cache budget)."""

    def __init__(self, files: FileImages, labels: torch.Tensor, workers: int, pin: bool):
        self.files, self.labels, self.workers, self.pin = files, labels, workers, pin

    def __len__(self) -> int:
        return len(self.files)

    def batches(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        balanced: bool = False,
    ) -> Iterable[Batch]:
        loader = DataLoader(
            self.files,
            batch_size=batch_size,
            # the order the cache would use
            sampler=_order(self.labels, generator, balanced).tolist(),
            drop_last=drop_last,
            num_workers=self.workers,
            pin_memory=self.pin,
            prefetch_factor=4 if self.workers else None,
            # the workers' seeds: they draw nothing, and the trial's generators stay untouched
            generator=torch.Generator().manual_seed(0),
        )
        return ((images, self.labels[index]) for images, index in loader)


def open_splits(
    frame: pd.DataFrame,
    root: str | None,
    image_size: int,
    cache: CacheFile | None,
    *,
    pin: bool = False,
    workers: int = 0,
) -> tuple[list[str], dict[str, SplitImages], int]:
    """Classes, each split's images, and how many images this call decoded.

    With a cache, the images come from the node's cache file, built first if
    this node has none (0 decoded when it was there); without one they are
    streamed from disk with ``workers`` DataLoader processes.
    """
    classes = classes_of(frame)
    index = {name: i for i, name in enumerate(classes)}
    labels = torch.tensor([index[label] for label in frame["label"]], dtype=torch.long)
    decode = item_decoder(root, image_size)
    decoded = 0
    images = None
    if cache is not None:
        decoded = ensure_cache(cache, frame, decode)
        images = open_cache(cache)
    splits: dict[str, SplitImages] = {}
    for split in SPLITS:
        rows = torch.from_numpy((frame["split"] == split).to_numpy().nonzero()[0])
        if not len(rows):
            continue
        if images is not None:
            splits[split] = CachedImages(images, rows, labels[rows], pin)
        else:
            items = frame["path"].iloc[rows.numpy()].tolist()
            splits[split] = StreamedImages(FileImages(items, decode), labels[rows], workers, pin)
    return classes, splits, decoded


def prefetch(batches: Iterator[Batch], depth: int = PREFETCH) -> Iterator[Batch]:
    """Runs ``batches`` one thread ahead (torch's gather and pinning release the GIL)."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                ready.put(batch)
        except BaseException as error:  # handed to the consumer
            ready.put(error)
        ready.put(done)

    thread = threading.Thread(target=work, name="ftsweep-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a put, let the thread see stop
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def _order(
    labels: torch.Tensor, generator: torch.Generator | None, balanced: bool = False
) -> torch.Tensor:
    """The rows of one pass: in order, shuffled, or drawn class-balanced (each
    image with probability 1 / (classes x its class's count)). Only
    ``generator`` decides, so a resumed epoch draws the same rows."""
    count = len(labels)
    if generator is None:
        return torch.arange(count)
    if not balanced:
        return torch.randperm(count, generator=generator)
    per_class = torch.bincount(labels).double()
    weights = 1.0 / per_class[labels]
    return torch.multinomial(weights, count, replacement=True, generator=generator)
