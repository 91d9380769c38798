"""Search-space files: YAML in, a validated frozen ``Space`` out.

Every key is checked before Ray starts; errors name the file, the line, the
key path and the allowed values.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from search.space.bounds import check_bound, check_finite
from search.space.checks import check_data, check_models, check_resources, start_point
from search.space.params import Located, Param, parse_params
from search.space.spec import (
    PRECISIONS,
    SAMPLERS,
    SCHEDULERS,
    DataSpec,
    ResourcesSpec,
    SchedulerSpec,
    SearchSpec,
    Space,
    TrialSpec,
)
from search.space.yamlfile import LocatedDict, as_number, load_yaml, plain
from trainables.cache import parse_budget
from trainables.errors import UserError
from trainables.hparams import METRICS
from trainables.limits import Limit


# section -> {key: (type, default)}; type "duration" is seconds or "8h", "30m", ...
def _fields(cls: type, types: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    defaults = cls()
    return {k: (t, getattr(defaults, k)) for k, t in types.items()}


# section -> {key: (type, default)}; "duration" is seconds or "8h", "30m", "1h30m"
_SECTIONS: dict[str, dict[str, tuple[Any, Any]]] = {
    "data": _fields(
        DataSpec,
        {
            "path": str,
            "manifest": str,
            "source": str,
            "image_size": int,
            "val_fraction": float,
            "test_fraction": float,
            "seed": int,
            "bad_files": str,
            "cache_budget": "size",
            "sampler": str,
        },
    ),
    "trial": _fields(
        TrialSpec,
        {
            "max_epochs": int,
            "batch_size": int,
            "metric": str,
            "mode": str,
            "precision": str,
            "max_failures": int,
            "compile": bool,
        },
    ),
    "search": {
        "num_samples": (int, 16),
        "max_concurrent": (int, 4),
        "time_budget": ("duration", None),
        "sampler": (str, "tpe"),
        "seed": (int, 0),
        "start_from": (list, []),
        "scheduler": (dict, {}),
        "finalists": (int, 3),
        "constraints": (dict, {}),
        "warm_start": (str, None),
        "warm_start_split": (str, "same"),
    },
    "resources": _fields(ResourcesSpec, {"cpus": float, "gpus": float, "reuse_actors": bool}),
    "scheduler": _fields(
        SchedulerSpec, {"type": str, "grace_period": int, "reduction_factor": float}
    ),
}
_TOP = ("name", "data", "trial", "search", "resources", "space")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)([dhms]))+$")


def load_space(path: str | Path, overrides: dict[str, Any] | None = None) -> Space:
    """Reads and validates a search-space file.

    Args:
        path: the YAML file.
        overrides: ``{"section.key": value}`` from command-line flags; they
            replace the same key of the file.

    Raises:
        UserError: with the file, line and key path of the first problem.
    """
    path = Path(path)
    raw = load_yaml(path)
    for dotted, value in (overrides or {}).items():
        *parents, key = dotted.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, LocatedDict())
        node[key] = value
    loc = Located(str(path))
    check_finite(raw, loc)  # .inf and .nan anywhere, before any value is used
    _check_keys(raw, _TOP, loc, "")
    if "space" not in raw:
        raise loc.error(raw, None, "space", "the file has no space: section")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        raise loc.error(raw, "name", "name", "name must be a folder name (letters, digits, . _ -)")
    data = DataSpec(**_section(raw, "data", loc))
    trial = _trial(raw, loc)
    resources = ResourcesSpec(**_section(raw, "resources", loc))
    if not isinstance(raw["space"], dict) or "backbone" not in raw["space"]:
        raise loc.error(raw, "space", "space", "space: needs at least backbone: (e.g. resnet50)")
    params = parse_params(raw["space"], loc)
    search = _search(raw, loc, params, trial)
    check_data(data, raw, loc)
    check_resources(resources, raw, loc)
    check_models(params, loc, raw["space"])
    return Space(name, data, trial, search, resources, params, plain(raw))


def _check_keys(mapping: Any, allowed: tuple[str, ...], loc: Located, path: str) -> None:
    for key in mapping:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            where = f"{path}.{key}" if path else str(key)
            raise loc.error(
                mapping,
                key,
                where,
                f"unknown key '{key}'"
                + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; allowed: {', '.join(allowed)}",
            )


def _section(parent: Any, name: str, loc: Located, path: str | None = None) -> dict[str, Any]:
    path = path or name
    fields = _SECTIONS[name]
    mapping = parent.get(name) if isinstance(parent, dict) else None
    if mapping is None:
        mapping = LocatedDict()
    if not isinstance(mapping, dict):
        raise loc.error(parent, name, path, f"{path}: must be a mapping of {', '.join(fields)}")
    _check_keys(mapping, tuple(fields), loc, path)
    out = {}
    for key, (kind, default) in fields.items():
        out[key] = default
        if key in mapping:
            out[key] = _typed(mapping[key], kind, mapping, key, loc, f"{path}.{key}")
            check_bound(out[key], f"{path}.{key}", mapping, key, loc)
    return out


def _typed(value: Any, kind: Any, mapping: Any, key: str, loc: Located, path: str) -> Any:
    if kind is float and (number := as_number(value)) is not None:
        return number
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (str, list, dict, bool) and isinstance(value, kind):
        return value
    if kind == "size":
        try:
            return parse_budget(value, path)
        except UserError as error:
            raise loc.error(mapping, key, path, error.message) from None
    if kind == "duration":
        seconds = as_number(value)
        if seconds is None and isinstance(value, str) and (m := _DURATION.match(value.strip())):
            units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
            parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", m.group(0))
            seconds = sum(float(n) * units[u] for n, u in parts)
        if seconds is not None and seconds > 0:
            return seconds
        raise loc.error(
            mapping, key, path, f"a duration like 8h, 90m, 1h30m or seconds; got {value!r}"
        )
    if value is None and kind is str:
        return None
    expected = {
        int: "an integer",
        float: "a number",
        str: "a name",
        list: "a list",
        dict: "a mapping",
        bool: "true or false",
    }
    raise loc.error(mapping, key, path, f"expected {expected[kind]}, got {value!r}")


def _trial(raw: LocatedDict, loc: Located) -> TrialSpec:
    values = _section(raw, "trial", loc)
    section = raw.get("trial") or LocatedDict()
    metric = values["metric"]
    if metric not in METRICS:
        raise loc.error(
            section,
            "metric",
            "trial.metric",
            f"unknown metric '{metric}'; use one of {', '.join(METRICS)}",
        )
    if "mode" not in section:
        values["mode"] = METRICS[metric]
    elif values["mode"] != METRICS[metric]:
        raise loc.error(
            section, "mode", "trial.mode", f"{metric} is optimised with mode: {METRICS[metric]}"
        )
    if values["precision"] not in PRECISIONS:
        raise loc.error(
            section,
            "precision",
            "trial.precision",
            f"precision must be one of {', '.join(PRECISIONS)}",
        )
    for key in ("max_epochs", "batch_size"):
        if values[key] < 1:
            raise loc.error(section, key, f"trial.{key}", f"{key} must be at least 1")
    if values["max_failures"] < 0:
        raise loc.error(
            section,
            "max_failures",
            "trial.max_failures",
            "max_failures must be 0 (never retry) or more",
        )
    return TrialSpec(**values)


def _search(
    raw: LocatedDict, loc: Located, params: tuple[Param, ...], trial: TrialSpec
) -> SearchSpec:
    values = _section(raw, "search", loc)
    section = raw.get("search") or LocatedDict()
    scheduler = SchedulerSpec(**_section(section, "scheduler", loc, "search.scheduler"))
    sched_section = section.get("scheduler") or LocatedDict()
    if scheduler.type not in SCHEDULERS:
        raise loc.error(
            sched_section,
            "type",
            "search.scheduler.type",
            f"scheduler type must be one of {', '.join(SCHEDULERS)}",
        )
    if not 1 <= scheduler.grace_period <= trial.max_epochs:
        raise loc.error(
            sched_section,
            "grace_period",
            "search.scheduler.grace_period",
            f"grace_period must be between 1 and trial.max_epochs ({trial.max_epochs})",
        )
    if scheduler.reduction_factor <= 1:
        raise loc.error(
            sched_section,
            "reduction_factor",
            "search.scheduler.reduction_factor",
            "reduction_factor must be > 1 (3 keeps the top third at each rung)",
        )
    if values["sampler"] not in SAMPLERS:
        raise loc.error(
            section, "sampler", "search.sampler", f"sampler must be one of {', '.join(SAMPLERS)}"
        )
    for key in ("num_samples", "max_concurrent"):
        if values[key] < 1:
            raise loc.error(section, key, f"search.{key}", f"{key} must be at least 1")
    if values["finalists"] < 0:
        raise loc.error(
            section,
            "finalists",
            "search.finalists",
            "finalists must be 0 (test no trial) or more (the top K are tested at the end)",
        )
    starts = section.get("start_from") or []
    points = tuple(start_point(p, params, loc, starts, i) for i, p in enumerate(starts))
    if values["warm_start_split"] not in ("same", "any"):
        raise loc.error(
            section,
            "warm_start_split",
            "search.warm_start_split",
            "warm_start_split is same (refuse an earlier sweep with another split) or any",
        )
    return SearchSpec(
        num_samples=values["num_samples"],
        max_concurrent=values["max_concurrent"],
        time_budget_s=values["time_budget"],
        sampler=values["sampler"],
        seed=values["seed"],
        start_from=points,
        scheduler=scheduler,
        finalists=values["finalists"],
        constraints=_limits(section, loc),
        warm_start=values["warm_start"],
        warm_start_split=values["warm_start_split"],
    )


def _limits(section: LocatedDict, loc: Located) -> tuple[Limit, ...]:
    """search.constraints: {figure: "<= NUMBER" or ">= NUMBER"}."""
    found = section.get("constraints") or LocatedDict()
    limits = []
    for key, text in found.items():
        try:
            limits.append(Limit.parse(str(key), text))
        except ValueError as exc:
            raise loc.error(found, key, f"search.constraints.{key}", str(exc)) from None
    return tuple(limits)
