"""What `ftsweep validate` reports about a space before anything runs."""

from __future__ import annotations

import os
from collections import Counter

import torch

from search.packing import suggest
from search.params import walk
from search.space import Space
from search.weights import pretrained
from trainables.models import input_size, stage_count
from trainables.scan import KINDS, SCAN_FILE


def describe(space: Space) -> list[str]:
    """Human-readable lines: the resolved space, data, resources, warnings."""
    lines = [f"name: {space.name}", "space:"]
    for param in walk(space.params):
        depth = param.column.count("/")
        lines.append(f"  {'  ' * depth}{param.column}: {param.describe()}")
    scan = space.data.scan()
    split = scan.frame
    counts = split.groupby("split").size().to_dict()
    lines.append(
        f"data: {space.data.source or space.data.path}: {len(split)} images, "
        f"{split['label'].nunique()} classes, "
        + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "test"))
    )
    left_out = Counter(p.kind for p in scan.problems)
    if left_out:
        lines.append(
            "data scan left out: "
            + ", ".join(f"{n} {KINDS[kind]}" for kind, n in left_out.items())
            + f" (data.bad_files: {space.data.bad_files}; `ftsweep run` lists them in {SCAN_FILE})"
        )
    backbones = sorted({v for p in walk(space.params) if p.name == "backbone" for v in p.values})
    lines.append(
        "backbone stages (frozen_depth counts these; all = every one): "
        + ", ".join(f"{b} {stage_count(b, space.data.image_size)}" for b in backbones)
    )
    sizes = {b: input_size(b, space.data.image_size) for b in backbones}
    resized = [f"{b} at {size} px" for b, size in sizes.items() if size != space.data.image_size]
    if resized:
        lines.append(
            f"resized on the device from image_size {space.data.image_size}: " + ", ".join(resized)
        )
    lines.append(
        f"resources per trial: {space.resources.cpus:g} CPU, {space.resources.gpus:g} GPU; "
        f"on this machine at most {concurrency(space)} trials at once "
        f"(max_concurrent {space.search.max_concurrent})"
    )
    lines += packing(space, backbones)
    lines += [f"warning: {w}" for w in warnings(space, backbones)]
    return lines


def packing(space: Space, backbones: list[str]) -> list[str]:
    """Suggested GPU fractions per trial (search/packing.py), and what the space asks for."""
    memory = None
    if torch.cuda.is_available():
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    batch = space.trial.batch_size
    found = [suggest(b, space.data.image_size, batch, memory) for b in backbones]
    known = [p for p in found if p is not None]
    if not known:
        return []
    overall = max(p.gpus for p in known)
    lines = ["packing on a GPU (forward work per step; small trials share a GPU):"]
    lines += [f"  {p.describe(batch)}" for p in known]
    lines.append(
        f"  suggested resources.gpus: {overall:g} (set by the largest model; "
        f"this file: {space.resources.gpus:g}). Packed trials time-share the GPU; "
        "CUDA MPS lets their kernels run at once (docs/performance.md)"
    )
    return lines


def concurrency(space: Space) -> int:
    cpus = os.cpu_count() or 1
    slots = int(cpus // space.resources.cpus) if space.resources.cpus else cpus
    if space.resources.gpus:
        slots = min(slots, int(torch.cuda.device_count() / space.resources.gpus))
    return max(0, min(slots, space.search.max_concurrent))


def warnings(space: Space, backbones: list[str]) -> list[str]:
    found = []
    if space.resources.gpus and not torch.cuda.is_available():
        found.append("resources.gpus is set but this machine has no GPU; trials will wait")
    missing = [item for item in pretrained(space.params) if not item.file.is_file()]
    for item in missing:
        found.append(
            f"{item.describe()} weights are not in the torch cache ({item.file}); each trial "
            "downloads them, which fails without internet: `ftsweep weights fetch` gets them now"
        )
    found += _clamped_depths(space, backbones)
    if (
        space.search.scheduler.type == "asha"
        and space.search.scheduler.grace_period >= space.trial.max_epochs
    ):
        found.append("ASHA's grace_period reaches max_epochs: no trial can be stopped early")
    return found


def _clamped_depths(space: Space, backbones: list[str]) -> list[str]:
    """frozen_depth values above a backbone's stage count (clamped to the whole backbone)."""
    depths: set[int] = set()
    for param in (p for p in walk(space.params) if p.name == "frozen_depth"):
        if param.kind == "int":
            depths.add(int(param.high))
        else:
            depths.update(v for v in param.values if isinstance(v, int))
    found = []
    for backbone in backbones:
        count = stage_count(backbone, space.data.image_size)
        if depths and max(depths) > count:
            found.append(
                f"frozen_depth up to {max(depths)} but {backbone} has {count} stages: "
                f"values above {count} freeze its whole backbone (clamped)"
            )
    return found
