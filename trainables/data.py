"""Data sources, the sweep's split, and decode-once image tensors.

A sweep computes its split once (``make_split``), writes it to split.csv and
every trial reads it back, so all trials and resumes see the same images.
Each trial process decodes and resizes its images once into uint8 tensors
(``decode_split``); augmentation then runs on tensors every epoch.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as F

from trainables.errors import UserError
from trainables.scan import Problem, Seen, apply_policy, scan_class_folders
from trainables.splitting import given_splits, split_off

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
BUILTIN_SOURCES = ("digits",)
DATA_SAMPLERS = ("uniform", "balanced")  # data.sampler: how training batches are drawn
_DIGITS_PREFIX = "digits:"


@dataclass(frozen=True)
class ImageSet:
    """The images of one split as uint8 NCHW tensors with integer labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Split:
    """The sweep's split, and what the data scan left out of it."""

    frame: pd.DataFrame  # columns path, label, split
    problems: list[Problem]


def build_split(
    path: str | None,
    source: str | None,
    *,
    manifest: str | None = None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    bad_files: str = "skip",
) -> Split:
    """Scans the data once and lists every usable image with its label and split.

    Args:
        manifest: a CSV or Parquet file listing the images (trainables/manifest.py),
            instead of ``path``'s folder.
        bad_files: ``skip`` leaves unreadable images, non-image files and
            empty class folders out with a warning; ``fail`` stops with a
            UserError that lists them.
    """
    if manifest is not None:
        return _from_manifest(Path(manifest), val_fraction, test_fraction, seed, bad_files)
    if source is not None:
        frame = _digits_items()
        frame = split_off(frame, val_fraction, test_fraction, seed, where=f"source: {source}")
        return Split(frame, [])
    root = Path(path or "")
    if not root.is_dir():
        raise UserError(
            "the data folder does not exist or is not a folder; set data.path to an ImageFolder "
            "root (class folders, or train/ val/ [test/] folders of class folders)",
            str(root),
        )
    if (root / "train").is_dir():
        return _presplit(root, val_fraction, test_fraction, seed, bad_files)
    scan = scan_class_folders(root, root)
    apply_policy(scan.problems, bad_files, str(root))
    frame = split_off(scan.items, val_fraction, test_fraction, seed, where=str(root))
    return Split(frame, scan.problems)


def make_split(path: str | None, source: str | None, **options: Any) -> pd.DataFrame:
    """Lists every image with its label and split (columns path, label, split).

    Takes build_split's options; the scan's findings are dropped (see build_split).
    """
    return build_split(path, source, **options).frame


def classes_of(frame: pd.DataFrame) -> list[str]:
    """Class names in label-index order."""
    return sorted(frame["label"].unique().tolist())


def write_split(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False)


def read_split(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(
            "split.csv is missing from the results folder; start a new sweep", str(path)
        )
    return parse_split(path)


def parse_split(source: Path | str) -> pd.DataFrame:
    """split.csv's rows from its path, or from its text when ``source`` is a str."""
    handle = io.StringIO(source) if isinstance(source, str) else source
    return pd.read_csv(handle, dtype={"path": str, "label": str, "split": str})


def decode_split(
    frame: pd.DataFrame, root: str | None, image_size: int
) -> tuple[list[str], dict[str, ImageSet]]:
    """Decodes and resizes every image once; returns classes and one ImageSet per split."""
    classes = classes_of(frame)
    index = {name: i for i, name in enumerate(classes)}
    decode = item_decoder(root, image_size)
    sets: dict[str, ImageSet] = {}
    for split in SPLITS:
        rows = frame[frame["split"] == split]
        if rows.empty:
            continue
        images = [decode(item) for item in rows["path"]]
        labels = torch.tensor([index[label] for label in rows["label"]], dtype=torch.long)
        sets[split] = ImageSet(torch.stack(images), labels)
    return classes, sets


def item_decoder(root: str | None, image_size: int) -> Callable[[str], torch.Tensor]:
    """A function from a split.csv path to its uint8 CHW image at ``image_size``."""

    def decode(item: str) -> torch.Tensor:
        if item.startswith(_DIGITS_PREFIX):
            return _digit_image(_digits_pixels(), item, image_size)
        return load_image(Path(root or "") / item, image_size)

    return decode


def load_image(path: Path, image_size: int) -> torch.Tensor:
    """Reads an image file as a uint8 CHW tensor, resized and centre-cropped to a square."""
    try:
        with Image.open(path) as image:
            return prepare_image(image, image_size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # DecompressionBombError: over Pillow's pixel limit (MAX_IMAGE_PIXELS x 2)
        raise UserError(f"cannot read this image ({exc}); remove or replace it", str(path)) from exc


def prepare_image(image: Image.Image | torch.Tensor, image_size: int) -> torch.Tensor:
    """The one preprocessing used for training, evaluation and prediction.

    Resizes the shorter side to ``image_size`` and centre-crops a square, on a
    uint8 RGB tensor.
    """
    if isinstance(image, Image.Image):
        tensor = F.pil_to_tensor(to_rgb(image))
    else:
        tensor = image
        if tensor.dtype != torch.uint8:
            tensor = (tensor.clamp(0, 1) * 255).round().to(torch.uint8)
        if tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
    tensor = F.resize(tensor, [image_size], antialias=True)
    return F.center_crop(tensor, [image_size, image_size]).contiguous()


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as the camera meant it: EXIF orientation applied (a phone's
    portrait photo is stored sideways with a tag), 16- and 32-bit grey scaled
    to 8 bits (``convert`` clips them, so a 16-bit PNG turned all white)."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":  # floats: 0..1 where the file says so, else their range
            top = 1.0 if values.max(initial=0.0) <= 1.0 else values.max()
        else:  # integers: 16 bits, unless an "I" image only holds 8
            top = 255.0 if image.mode == "I" and values.max(initial=0.0) <= 255 else 65535.0
        grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        image = Image.fromarray(grey)
    return image.convert("RGB")


def _digits_items() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    target = load_digits().target
    return pd.DataFrame(
        {"path": [f"{_DIGITS_PREFIX}{i}" for i in range(len(target))], "label": target.astype(str)}
    )


@functools.cache  # once per process: every trial a reused worker runs shares it
def _digits_pixels() -> np.ndarray:
    from sklearn.datasets import load_digits

    # 8x8 intensities 0..16 -> 0..255
    return np.round(load_digits().images * (255.0 / 16.0)).astype(np.uint8)


def _digit_image(pixels: np.ndarray, item: str, image_size: int) -> torch.Tensor:
    gray = torch.from_numpy(pixels[int(item[len(_DIGITS_PREFIX) :])])[None]
    resized = F.resize(gray, [image_size, image_size], antialias=True)
    return resized.expand(3, -1, -1).contiguous()


def _presplit(
    root: Path, val_fraction: float, test_fraction: float, seed: int, bad_files: str
) -> Split:
    seen = Seen(root.resolve())  # no file in two splits, however linked
    scans = {"train": scan_class_folders(root / "train", root, seen=seen)}
    for split in ("val", "test"):
        if (root / split).is_dir():
            scans[split] = scan_class_folders(root / split, root, seen=seen)
    problems = [p for scan in scans.values() for p in scan.problems]
    apply_policy(problems, bad_files, str(root))
    parts = {split: scan.items for split, scan in scans.items()}
    wheres = {split: str(root / split) for split in parts}
    names = {split: f"{split}/" for split in parts}
    return Split(given_splits(parts, val_fraction, test_fraction, seed, wheres, names), problems)


def _from_manifest(
    file: Path, val_fraction: float, test_fraction: float, seed: int, bad_files: str
) -> Split:
    from trainables.manifest import scan_manifest  # pandas' CSV and Parquet readers

    items, problems = scan_manifest(file)
    apply_policy(problems, bad_files, str(file))
    if "split" not in items:
        return Split(split_off(items, val_fraction, test_fraction, seed, str(file)), problems)
    parts = {s: items[items["split"] == s].drop(columns="split") for s in SPLITS}
    parts = {s: part for s, part in parts.items() if len(part)}
    if "train" not in parts:
        raise UserError(
            "column split: no row is in train; mark the training images train (val and test "
            "rows are optional: without them ftsweep splits them off train)",
            str(file),
        )
    wheres = {split: str(file) for split in parts}
    names = {split: f"the {split} rows" for split in parts}
    return Split(given_splits(parts, val_fraction, test_fraction, seed, wheres, names), problems)
