"""What `ftsweep validate` reports about a space before anything runs."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch

from search.params import walk
from search.space import Space
from trainables.models import cached_weights_file, resolve_weights, stage_count
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
        "backbone stages (frozen_depth counts these): "
        + ", ".join(f"{b} {stage_count(b)}" for b in backbones)
    )
    lines.append(
        f"resources per trial: {space.resources.cpus:g} CPU, {space.resources.gpus:g} GPU; "
        f"on this machine at most {concurrency(space)} trials at once "
        f"(max_concurrent {space.search.max_concurrent})"
    )
    lines += [f"warning: {w}" for w in warnings(space, backbones)]
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
    for param in (p for p in walk(space.params) if p.name == "weights"):
        for value in param.values:
            for backbone in backbones:
                weights = resolve_weights(backbone, value)
                if weights is None or isinstance(weights, Path):
                    continue
                target = cached_weights_file(weights)
                if not target.is_file():
                    found.append(
                        f"{backbone} {value} weights are not in the torch cache ({target}); "
                        "each trial downloads them, which fails without internet"
                    )
    if (
        space.search.scheduler.type == "asha"
        and space.search.scheduler.grace_period >= space.trial.max_epochs
    ):
        found.append("ASHA's grace_period reaches max_epochs: no trial can be stopped early")
    return found
