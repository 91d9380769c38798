"""`ftsweep init`: a commented starter space file for an ImageFolder, sized to it."""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from trainables.data import build_split
from trainables.errors import UserError
from trainables.manifest import read_manifest

SIZES = (64, 96, 128, 160, 224)  # image_size choices: the largest the images fill


@dataclass(frozen=True)
class Tier:
    """Search settings for a data set of a given size."""

    words: str
    backbones: tuple[str, ...]
    frozen: tuple[int, int]
    max_epochs: int
    num_samples: int
    batch_size: int


SMALL = Tier("small", ("resnet18", "mobilenet_v3_large", "efficientnet_b0"), (1, 4), 15, 24, 32)
MEDIUM = Tier("medium", ("resnet50", "efficientnet_b0", "convnext_tiny"), (0, 3), 20, 48, 64)
LARGE = Tier(
    "large", ("resnet50", "convnext_tiny", "efficientnet_v2_s", "vit_b_16"), (0, 2), 30, 64, 128
)
TIERS = ((2_000, SMALL), (50_000, MEDIUM), (None, LARGE))  # by training images, below the bound


def starter_space(data: Path, name: str | None = None) -> str:
    """The YAML text of a space for ``data`` (an ImageFolder, or a manifest file),
    with comments saying why.

    Long: most of it is the commented YAML template itself, read top to bottom.
    """
    manifest = data.is_file()
    split = build_split(
        None if manifest else str(data),
        None,
        manifest=str(data) if manifest else None,
        val_fraction=0.15,
        test_fraction=0.15,
        seed=0,
    )
    frame = split.frame
    train = frame[frame["split"] == "train"]
    counts = train["label"].value_counts()
    tier = next(t for bound, t in TIERS if bound is None or len(train) < bound)
    root = data.parent if manifest else data
    side = _median_short_side(root, frame["path"].tolist())
    image_size = max([s for s in SIZES if s <= side] or [SIZES[0]])
    given = _given_splits(data, manifest)
    held_out = "by group" if "group" in frame else "stratified"
    val_note = (
        f"unused: the data has {given['val']}"
        if given["val"]
        else f"held out of the training images, {held_out}"
    )
    test_note = (
        f"unused: the data has {given['test']}"
        if given["test"]
        else "never used to choose: the finalists are scored on it"
    )
    stem = data.resolve().stem if manifest else data.resolve().name
    name = name or re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-") or "sweep"
    where = "manifest" if manifest else "path"
    splits = ", ".join(f"{n} {s}" for s, n in frame["split"].value_counts().items())
    left_out = len(split.problems)
    problems = f"; {left_out} files left out (ftsweep validate lists them)" if left_out else ""
    frozen = f"{{int: [{tier.frozen[0]}, {tier.frozen[1]}]}}"
    sizes = ", ".join(map(str, SIZES))
    gpus, gpu_note = (
        (0.5, "two trials share each GPU")
        if torch.cuda.is_available()
        else (0, "no GPU here: set gpus (0.5 packs two trials on one) where there is")
    )
    backbones = ", ".join(tier.backbones)
    return f"""\
# Starter space written by `ftsweep init {data}`.
# The data: {len(frame):,} images in {len(counts)} classes ({splits}); the smallest
# class has {counts.min()} training images; the images are about {side} px on
# their short side{problems}.
# A {tier.words} data set: the ranges below are sized for it. Check, then:
#   ftsweep validate <this file>
#   ftsweep run <this file>
name: {name}
data:
  {where}: {json.dumps(str(data.resolve()))}
  image_size: {image_size}              # the largest of {sizes} the images fill
  val_fraction: 0.15           # {val_note}
  test_fraction: 0.15          # {test_note}
  seed: 0
trial:
  max_epochs: {tier.max_epochs}               # ASHA stops weak trials long before this
  batch_size: {tier.batch_size}
  metric: val_accuracy
  precision: bf16              # autocast on a GPU; a CPU trains in fp32
search:
  num_samples: {tier.num_samples}
  max_concurrent: 8            # at most; Ray runs as many as the resources allow
  time_budget: 8h              # then no new trials, and running ones stop (out_of_time)
  sampler: tpe
  seed: 0
  scheduler: {{type: asha, grace_period: 1, reduction_factor: 3}}
  finalists: 3                 # the best 3 on validation are scored on the test split
resources: {{cpus: 2, gpus: {gpus}}}  # per trial; {gpu_note}
space:
  backbone: {{choice: [{backbones}]}}
  weights: DEFAULT             # ImageNet weights from TORCH_HOME (ftsweep weights fetch)
  frozen_depth: {frozen}     # stages frozen from the input: fewer images, more frozen
  head_hidden: {{choice: [0, 256]}}
  head_dropout: {{uniform: [0.0, 0.5]}}
  optimizer:
    choice:
      adamw: {{weight_decay: {{loguniform: [1.0e-5, 1.0e-1]}}}}
      sgd: {{momentum: {{uniform: [0.8, 0.99]}}, nesterov: {{choice: [true, false]}}}}
  lr: {{loguniform: [1.0e-5, 1.0e-2]}}
  backbone_lr_mult: {{loguniform: [0.01, 1.0]}}   # pretrained layers learn slower than the head
  lr_scheduler: {{choice: [cosine, onecycle]}}
  warmup_epochs: {{int: [0, 2]}}
  augmentation: {{choice: [light, strong, trivialaugment]}}
  label_smoothing: {{uniform: [0.0, 0.2]}}
"""


def _given_splits(data: Path, manifest: bool) -> dict[str, str | None]:
    """What the user gave as val and test: folders, or a manifest's rows."""
    if manifest:
        frame = read_manifest(data)
        values = set(frame["split"]) if "split" in frame else set()
        return {s: f"{s} rows" if s in values else None for s in ("val", "test")}
    presplit = (data / "train").is_dir()
    return {
        s: f"a {s}/ folder" if presplit and (data / s).is_dir() else None for s in ("val", "test")
    }


def write_starter(data: Path, out: Path, name: str | None = None) -> Path:
    """Writes ``starter_space`` to ``out``, never over an existing file."""
    if out.exists():
        raise UserError(
            "the file exists; give another --out, or move it away to write a new one", str(out)
        )
    text = starter_space(data, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def _median_short_side(root: Path, paths: list[str], sample: int = 64) -> int:
    """The median short side of up to ``sample`` images (headers only, nothing decoded)."""
    step = max(1, len(paths) // sample)
    sides = []
    for item in paths[::step][:sample]:
        try:
            with Image.open(root / item) as image:
                sides.append(min(image.size))
        except OSError:
            continue
    return int(statistics.median(sides)) if sides else SIZES[-1]
