"""What an export measures and writes down: the temperature fitted on the
validation split, calibration before and after, the per-class table, the
split sizes and the inference speed (metrics.json, read by the model card)."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from sklearn.metrics import precision_recall_fscore_support
from torch import nn

from search.model.calibration import calibration_figures, fit_temperature
from trainables.data import classes_of, decode_split
from trainables.errors import UserError
from trainables.loop import measure_speed, predict_logits, scores

log = logging.getLogger(__name__)

SPEED_BATCH = 32  # the batch size of the throughput figure

Labelled = tuple[torch.Tensor, torch.Tensor]  # uint8 NCHW images, class indices


def split_set(split: pd.DataFrame, root: str | None, image_size: int, name: str) -> Labelled:
    """One split's images, labelled with the class index the trials trained with."""
    classes = classes_of(split)
    rows = split[split["split"] == name]
    _, sets = decode_split(rows, root, image_size)
    names = classes_of(rows)  # decode_split indexes the given rows' classes only
    labels = torch.tensor([classes.index(names[i]) for i in sets[name].labels.tolist()])
    return sets[name].images, labels


def readable_split_set(
    split: pd.DataFrame, root: str | None, image_size: int, name: str
) -> Labelled | None:
    """split_set, or None with a warning when its images cannot be read any more
    (deleted or changed since the run): the sweep's end then goes on without
    these figures rather than stopping before best/ is written."""
    try:
        return split_set(split, root, image_size, name)
    except UserError as error:
        log.warning("no %s scores: the %s images cannot be read (%s)", name, name, error)
        return None


def evaluation_sets(split: pd.DataFrame, root: str | None, image_size: int) -> dict[str, Labelled]:
    """The validation and test splits that the sweep has and that can be read."""
    found = {}
    for name in ("val", "test"):
        if (split["split"] == name).any():
            readable = readable_split_set(split, root, image_size, name)
            if readable is not None:
                found[name] = readable
    return found


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def split_logits(network: nn.Module, sets: dict[str, Labelled]) -> dict[str, torch.Tensor]:
    """Each split's logits (on the CPU), computed on the default device."""
    device = default_device()
    try:
        return {name: predict_logits(network.to(device), s[0], device) for name, s in sets.items()}
    finally:
        network.cpu()


def model_figures(
    logits: dict[str, torch.Tensor],
    sets: dict[str, Labelled],
    classes: list[str],
    temperature: float | None = None,
) -> dict[str, Any]:
    """Temperature (fitted on val unless given), scores, calibration before and
    after on each split, and the per-class table of the test split (else val)."""
    if temperature is None:
        temperature = val_temperature(logits, sets)
    figures: dict[str, Any] = {"temperature": temperature, "scores": {}, "calibration": {}}
    for name, values in logits.items():
        labels = sets[name][1]
        figures["scores"][name] = scores(values, labels)
        figures["calibration"][name] = calibration_figures(values, labels, temperature)
    if logits:
        name = "test" if "test" in logits else "val"
        figures["per_class"] = {"split": name} | per_class_table(
            logits[name].argmax(dim=1), sets[name][1], classes
        )
    return figures


def val_temperature(logits: dict[str, torch.Tensor], sets: dict[str, Labelled]) -> float:
    """The temperature fitted on the validation split's logits (1.0 without one)."""
    return fit_temperature(logits["val"], sets["val"][1]) if "val" in logits else 1.0


def per_class_table(
    predicted: torch.Tensor, labels: torch.Tensor, classes: list[str]
) -> dict[str, Any]:
    """Precision, recall, F1 and support of every class (scikit-learn's)."""
    indices = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels.numpy(), predicted.numpy(), labels=indices, zero_division=0
    )
    return {
        "classes": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        }
    }


def split_sizes(split: pd.DataFrame) -> dict[str, int]:
    counts = split["split"].value_counts()
    return {name: int(counts.get(name, 0)) for name in ("train", "val", "test")}


def speed_figures(network: nn.Module, image_size: int) -> dict[str, Any]:
    """Latency at batch 1 and throughput at SPEED_BATCH, with where they were measured."""
    device = default_device()
    try:
        latency_ms, throughput = measure_speed(  # the median of 3 or more passes each
            network.to(device), image_size, device, batch_size=SPEED_BATCH, min_seconds=0.1
        )
    finally:
        network.cpu()
    return {
        "latency_ms": latency_ms,
        "throughput": throughput,
        "batch_size": SPEED_BATCH,
        "image_size": image_size,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"CPU ({model or platform.processor() or platform.machine()})"
