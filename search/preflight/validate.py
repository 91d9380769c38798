"""What `ftsweep validate` reports about a space before anything runs."""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from search.preflight.costs import TIMING_BUDGET_S, duration, time_trials
from search.preflight.limits import limit_warnings
from search.preflight.packing import suggest
from search.preflight.weights import pretrained
from search.space.checks import unmet_resources
from search.space.expect import asha_epochs
from search.space.loader import Space
from search.space.params import Param, walk
from trainables.backbones import stage_count
from trainables.models import input_size
from trainables.scan import KINDS, SCAN_FILE

MAX_CLASSES_LISTED = 12  # more: the range of the per-class counts
SIZE_SAMPLE = 200  # image headers read for the sizes

log = logging.getLogger(__name__)


def describe(
    space: Space, *, timing: bool = True, nodes: list[dict[str, float]] | None = None
) -> list[str]:
    """Human-readable lines: the resolved space, data, resources, costs, warnings.

    Args:
        timing: time a few training steps of each backbone on this machine.
        nodes: the resources of each node of the Ray cluster the sweep will run
            on (None: this machine).
    """
    params = list(walk(space.params))
    searched = [p for p in params if p.kind != "const"]
    conditional = [p for p in params if "/" in p.column]
    lines = [
        f"name: {space.name}",
        f"space: {len(searched)} searched parameters, {len(conditional)} of them conditional "
        f"(sampled only when their option is chosen), {len(params) - len(searched)} constants; "
        f"{_combinations(space.params)} combinations of the choices",
    ]
    for param in params:
        depth = param.column.count("/")
        lines.append(f"  {'  ' * depth}{param.column}: {param.describe()}")
    scan = space.data.scan()
    split = scan.frame
    counts = split.groupby("split").size().to_dict()
    lines.append(
        f"data: {space.data.source or space.data.path or space.data.manifest}: "
        f"{len(split)} images, "
        f"{split['label'].nunique()} classes, "
        + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "test"))
    )
    lines += _per_class(split)
    lines += _image_sizes(space, split)
    left_out = Counter(p.kind for p in scan.problems)
    if left_out:
        lines.append(
            "data scan left out: "
            + ", ".join(f"{n} {KINDS[kind]}" for kind, n in left_out.items())
            + f" (data.bad_files: {space.data.bad_files}; `ftsweep run` lists them in {SCAN_FILE})"
        )
    else:
        lines.append("data problems: none found by the scan")
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
    at_once = concurrency(space, nodes)
    where = "on this machine" if nodes is None else f"on the cluster's {len(nodes)} nodes"
    lines.append(
        f"resources per trial: {space.resources.cpus:g} CPU, {space.resources.gpus:g} GPU; "
        f"{where} at most {at_once} trials at once "
        f"(max_concurrent {space.search.max_concurrent})"
    )
    lines += packing(space, backbones)
    found = warnings(space, backbones) + _unmet(space, nodes)
    found += limit_warnings(space, backbones, split["label"].nunique())
    if timing:
        cost_lines, cost_warnings = _costs(space, backbones, split, at_once)
        lines += cost_lines
        found += cost_warnings
    found += _coverage(space, searched)
    lines += [f"warning: {w}" for w in found]
    return lines


def _per_class(split: pd.DataFrame) -> list[str]:
    table = split.groupby(["label", "split"]).size().unstack(fill_value=0)
    table = table.reindex(columns=["train", "val", "test"], fill_value=0)
    if len(table) <= MAX_CLASSES_LISTED:
        return [
            "images per class (train/val/test): "
            + ", ".join(f"{label} {r.train}/{r.val}/{r.test}" for label, r in table.iterrows())
        ]
    train = table["train"].sort_values()
    return [
        f"images per class in train: {train.min()} to {train.max()} (median "
        f"{int(train.median())}); fewest: "
        + ", ".join(f"{label} {n}" for label, n in train.head(3).items())
    ]


def _image_sizes(space: Space, split: pd.DataFrame) -> list[str]:
    """Image sizes from the headers of up to SIZE_SAMPLE images (nothing decoded)."""
    if space.data.root is None:
        return [f"image size: {space.data.source} images, resized to {space.data.image_size} px"]
    root = Path(space.data.root)
    paths = split["path"].tolist()
    step = max(1, len(paths) // SIZE_SAMPLE)
    sizes = []
    for item in paths[::step][:SIZE_SAMPLE]:
        with contextlib.suppress(OSError), Image.open(root / item) as image:
            sizes.append(image.size)
    if not sizes:
        return []
    shorts = sorted(min(s) for s in sizes)
    common = Counter(sizes).most_common(1)[0]
    small = sum(side < space.data.image_size for side in shorts)
    line = (
        f"image sizes ({len(sizes)} sampled): short side {shorts[0]} to {shorts[-1]} px "
        f"(median {shorts[len(shorts) // 2]}), most common {common[0][0]}x{common[0][1]}; "
        f"trials resize them to {space.data.image_size} px"
    )
    if small:
        line += f" ({small} of them smaller: enlarged)"
    return [line]


def _combinations(params: tuple[Param, ...]) -> int:
    """How many combinations of the choices (ranges not counted), branches included."""
    total = 1
    for param in params:
        if param.kind != "choice":
            continue
        if param.branches:
            total *= sum(_combinations(branch) for branch in param.branches)
        else:
            total *= len(param.values)
    return total


def _costs(
    space: Space, backbones: list[str], split: pd.DataFrame, at_once: int
) -> tuple[list[str], list[str]]:
    """The timed step's lines, and the time budget's warning."""
    device = torch.device("cuda" if space.resources.gpus and torch.cuda.is_available() else "cpu")
    counts = split["split"].value_counts()
    log.info(
        "timing a training step of %d backbone(s), at most about %.0f s in all "
        "(--no-timing skips it)",
        len(backbones),
        TIMING_BUDGET_S,
    )
    costs = time_trials(
        space,
        backbones,
        int(counts.get("train", 0)),
        int(counts.get("val", 0)),
        split["label"].nunique(),
        device,
        progress=lambda line: log.info("  %s", line),
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = "" if device.type == "cuda" else f", {_threads(space)}"
    lines = [
        f"cost per trial (a timed training step on this machine's {name}{threads}: "
        f"nothing frozen, batch {space.trial.batch_size} at {space.data.image_size} px):"
    ]
    lines += [f"  {c.describe(space.trial.max_epochs)}" for c in costs]
    if estimated := sum(c.estimated for c in costs):
        lines.append(f"  ({estimated} of {len(costs)} estimated: the timing budget was spent)")
    mean = sum(c.trial_s for c in costs) / len(costs)
    slots = max(1, at_once)
    trials = space.search.num_samples
    full = trials * mean / slots
    sched = space.search.scheduler
    estimate = (
        f"sweep: {trials} trials, {slots} at once: up to {duration(full)} if none stops early"
    )
    expected = full
    if sched.type == "asha":
        epochs = asha_epochs(space.trial.max_epochs, sched.grace_period, sched.reduction_factor)
        expected = full * epochs / space.trial.max_epochs
        estimate += (
            f"; about {duration(expected)} when ASHA stops trials as it is set to "
            f"({epochs:.1f} epochs per trial on average)"
        )
    lines.append(estimate)
    found = []
    budget = space.search.time_budget_s
    if budget is not None and expected > budget:
        done = int(trials * budget / expected)
        found.append(
            f"search.time_budget {duration(budget)} ends the sweep before it is done: the "
            f"estimate is {duration(expected)}, so about {done} of {trials} trials finish and "
            "the running ones are cut short; raise the budget, lower num_samples or max_epochs, "
            "or give trials more resources"
        )
    return lines, found


def _coverage(space: Space, searched: list[Param]) -> list[str]:
    """A space larger than num_samples trials can cover."""
    trials = space.search.num_samples
    combinations = _combinations(space.params)
    reasons = []
    if combinations > trials:
        reasons.append(
            f"{combinations} combinations of its choices (at most "
            f"{100 * trials / combinations:.0f}% can be tried, ranges aside)"
        )
    if len(searched) > trials:
        reasons.append(
            f"{len(searched)} searched parameters (a sampler needs several trials per "
            "parameter to learn which matter)"
        )
    if not reasons:
        return []
    return [
        f"the space is larger than num_samples {trials} can cover: "
        + " and ".join(reasons)
        + "; fix some parameters as constants, drop choices, or raise num_samples"
    ]


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


def this_machine() -> list[dict[str, float]]:
    """This machine as one node, in Ray's terms (where validate has no cluster)."""
    return [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]


def concurrency(space: Space, nodes: list[dict[str, float]] | None = None) -> int:
    """Trials that fit at once: on each node (this machine when ``nodes`` is None)
    as many as its CPUs and GPUs allow, up to max_concurrent in all."""
    if nodes is None:
        nodes = this_machine()
    slots = 0
    for node in nodes:
        cpus, gpus = node.get("CPU", 0.0), node.get("GPU", 0.0)
        fit = int(cpus // space.resources.cpus) if space.resources.cpus else int(cpus)
        if space.resources.gpus:
            fit = min(fit, int(gpus / space.resources.gpus + 1e-9))
        slots += fit
    return max(0, min(slots, space.search.max_concurrent))


def _unmet(space: Space, nodes: list[dict[str, float]] | None) -> list[str]:
    """A warning when no node (this machine, or the cluster's) can run one trial."""
    unmet = unmet_resources(space.resources, nodes or this_machine())
    if unmet is None:
        return []
    if nodes is None:
        return [f"{unmet}: `ftsweep run` stops here with exit 2"]
    return [f"{unmet}: trials would wait until the cluster adds such a node"]


def warnings(space: Space, backbones: list[str]) -> list[str]:
    found = []
    missing = [item for item in pretrained(space.params) if not item.file.is_file()]
    for item in missing:
        found.append(
            f"{item.describe()} weights are not in the {item.cache} ({item.file}); each trial "
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


def _threads(space: Space) -> str:
    count = max(1, int(space.resources.cpus))
    return f"{count} thread{'s' if count > 1 else ''}"
