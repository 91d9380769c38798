"""model.json, read strictly: every field checked before a network is built.

An exported folder is data a user may have edited, copied from elsewhere or
damaged; a field of the wrong type or out of range is named in one paragraph
(exit 2) instead of failing inside torchvision or torch.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

from search.model.calibration import MAX_TEMPERATURE, MIN_TEMPERATURE
from search.model.networks import ENSEMBLE
from search.outputs.layout import MODEL_FILE
from search.space.bounds import BOUNDS
from trainables import timm_backbones
from trainables.backbones import supported_backbones
from trainables.errors import UserError
from trainables.hparams import HPARAMS, MODEL
from trainables.timm_backbones import is_timm

FORMAT_VERSION = 2  # 2: ensembles (a folder of one model still says 1)
SINGLE_FORMAT = 1
MAX_CLASSES = 100_000
MAX_HIDDEN = 65_536


def read_description(model_dir: Path) -> dict[str, Any]:
    """model.json's fields, each checked; the model group (``model``) filled in
    for folders written before it was recorded."""
    path = model_dir / MODEL_FILE

    def bad(field: str, problem: str) -> UserError:
        return UserError(
            f"{MODEL_FILE} is damaged or not from ftsweep: {field} {problem}; export the "
            "model again (`ftsweep export RESULTS/NAME --out DIR`)",
            str(path),
        )

    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise bad("the file", f"is not JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(description, dict):
        raise bad("the file", "is not a JSON object")
    version = description.get("format_version", 1)
    if not _is_int(version) or version < 1:
        raise bad("format_version", f"must be a whole number from 1, not {version!r}")
    if version > FORMAT_VERSION:
        raise UserError(
            f"this model folder has format_version {version}, newer than this ftsweep reads "
            f"({FORMAT_VERSION}); upgrade ftsweep",
            str(path),
        )
    classes = description.get("classes")
    if (
        not isinstance(classes, list)
        or not 1 <= len(classes) <= MAX_CLASSES
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise bad("classes", "must be a list of distinct class names")
    low, high, _ = BOUNDS["data.image_size"]
    size = description.get("image_size")
    if not _is_int(size) or not low <= size <= high:
        raise bad("image_size", f"must be a whole number from {low} to {high}, not {size!r}")
    temperature = description.get("temperature", 1.0)  # folders from before calibration: 1
    if problem := _temperature_problem(temperature):
        raise bad("temperature", problem)
    if description.get("backbone") == ENSEMBLE:
        members = description.get("members")
        if not isinstance(members, list) or not members:
            raise bad("members", "must be a list of the ensemble's models")
        checked = []
        for number, member in enumerate(members):
            try:
                checked.append(_member(member))
            except ValueError as exc:
                field = f"members[{number}]" + (f".{exc.args[0]}" if exc.args[0] else "")
                raise bad(field, exc.args[1]) from None
        return {**description, "temperature": temperature, "members": checked}
    try:
        return {**description, "temperature": temperature} | _member(description)
    except ValueError as exc:
        raise bad(exc.args[0], exc.args[1]) from None


def _member(description: Any) -> dict[str, Any]:
    """One model's fields (backbone, head, model, temperature) checked, the model
    group filled in for folders written before it was recorded; a ValueError
    (field, problem) names what is wrong."""
    if not isinstance(description, dict):
        raise ValueError("", "must be an object")
    backbone = description.get("backbone")
    if not isinstance(backbone, str) or not (
        backbone in supported_backbones() or (is_timm(backbone) and _timm_builds(backbone))
    ):
        raise ValueError("backbone", f"{backbone!r} is not a backbone ftsweep builds")
    head = description.get("head")
    if not isinstance(head, dict):
        raise ValueError("head", "must be an object with hidden and dropout")
    hidden, dropout = head.get("hidden"), head.get("dropout")
    if not _is_int(hidden) or not 0 <= hidden <= MAX_HIDDEN:
        raise ValueError(
            "head.hidden", f"must be a whole number from 0 to {MAX_HIDDEN}, not {hidden!r}"
        )
    if not _is_number(dropout) or not 0 <= dropout < 1:
        raise ValueError("head.dropout", f"must be a number from 0 to below 1, not {dropout!r}")
    temperature = description.get("temperature", 1.0)
    if problem := _temperature_problem(temperature):
        raise ValueError("temperature", problem)
    group = description.get("model")
    if group is None:  # folders written before model.json recorded the model group
        group = {"backbone": backbone, "head_hidden": hidden, "head_dropout": float(dropout)}
    problem = _group_problem(group, backbone)
    if problem:
        raise ValueError("model", problem)
    return {**description, "model": group, "temperature": temperature}


def _temperature_problem(value: Any) -> str | None:
    if _is_number(value) and MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
        return None
    return f"must be a number from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}, not {value!r}"


def _group_problem(group: Any, backbone: str) -> str | None:
    """What is wrong with the model group (hparams.MODEL's keys), if anything."""
    if not isinstance(group, dict):
        return "must be an object of model hyperparameters"
    if group.get("backbone") != backbone:
        return f"names backbone {group.get('backbone')!r}, not {backbone!r}"
    for key, value in group.items():
        spec = HPARAMS.get(key)
        if spec is None or spec.group != MODEL:
            return f"has {key!r}, which is not a model hyperparameter"
        if value is None or key in ("weights", "frozen_depth"):
            continue  # None: the builder's default; weights and depth: not used to load
        accepts, kind = _TYPES[spec.type]
        if not accepts(value):
            return f"{key} must be {kind}, not {value!r}"
        if spec.choices is not None and value not in spec.choices:
            return f"{key} must be one of {list(spec.choices)}, not {value!r}"
        if spec.type in (int, float):
            if spec.lo is not None and value < spec.lo:
                return f"{key} must be at least {spec.lo:g}, not {value!r}"
            if spec.hi is not None and value >= spec.hi:
                return f"{key} must be below {spec.hi:g}, not {value!r}"
    return None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# A model hyperparameter's type: its check of a JSON value, and its name in a message.
_TYPES: dict[type, tuple[Callable[[Any], bool], str]] = {
    int: (_is_int, "a whole number"),
    float: (_is_number, "a number"),
    str: (lambda value: isinstance(value, str), "a name"),
    bool: (lambda value: isinstance(value, bool), "true or false"),
}


def _timm_builds(backbone: str) -> bool:
    """Whether timm builds it; a UserError says how to install timm where it is missing."""
    try:
        timm_backbones.check(backbone)
    except UserError:
        if importlib.util.find_spec("timm") is None:
            raise
        return False
    return True
