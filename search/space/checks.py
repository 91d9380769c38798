"""Checks of a space that span keys: start points, data, resources, models."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from search.space.params import Located, Param, backbone_pairs, walk, weight_pairs
from search.space.yamlfile import LocatedDict, as_number
from trainables import timm_backbones
from trainables.backbones import BUILDER_OPTIONS, builder_kwargs, supported_backbones
from trainables.data import BUILTIN_SOURCES, DATA_SAMPLERS
from trainables.errors import UserError
from trainables.scan import BAD_FILE_POLICIES
from trainables.timm_backbones import is_timm
from trainables.weights import resolve_weights

if TYPE_CHECKING:
    from search.space.spec import DataSpec, ResourcesSpec


def start_point(
    point: Any, params: tuple[Param, ...], loc: Located, starts: Any, index: int
) -> dict[str, Any]:
    path = f"search.start_from[{index}]"
    if not isinstance(point, dict):
        raise loc.error(
            starts, index, path, "each start_from entry is a mapping {parameter: value}"
        )
    remaining = dict(point)
    keyed: dict[str, Any] = {}
    level = params
    while level:
        next_level: tuple[Param, ...] = ()
        for param in level:
            for name in (param.column, param.name):
                if name in remaining and param.kind != "const":
                    value = remaining.pop(name)
                    if isinstance(value, str) and (number := as_number(value)) is not None:
                        value = number
                    if not param.contains(value):
                        raise loc.error(
                            point,
                            name,
                            f"{path}.{name}",
                            f"{value!r} is outside the space's {param.describe()}",
                        )
                    keyed[param.key] = value
                    if param.branches:
                        next_level += param.branches[param.values.index(value)]
                    break
        level = next_level
    if remaining:
        key = next(iter(remaining))
        raise loc.error(
            point,
            key,
            f"{path}.{key}",
            f"'{key}' is not a searched parameter of this space "
            "(or its parent option is not chosen in this entry)",
        )
    return keyed


def check_data(data: DataSpec, raw: LocatedDict, loc: Located) -> None:
    section = raw.get("data") or LocatedDict()
    if sum(x is not None for x in (data.path, data.manifest, data.source)) != 1:
        raise loc.error(
            section,
            None,
            "data",
            "data needs exactly one of path: (an ImageFolder root), manifest: (a CSV or "
            "Parquet file with columns path and label) or source: digits",
        )
    if data.source is not None and data.source not in BUILTIN_SOURCES:
        raise loc.error(
            section,
            "source",
            "data.source",
            f"unknown source; built-in: {', '.join(BUILTIN_SOURCES)}",
        )
    if data.bad_files not in BAD_FILE_POLICIES:
        raise loc.error(
            section,
            "bad_files",
            "data.bad_files",
            f"bad_files must be one of {', '.join(BAD_FILE_POLICIES)} (skip: leave unreadable "
            "images out with a warning; fail: stop before any trial starts)",
        )
    if data.sampler not in DATA_SAMPLERS:
        raise loc.error(
            section,
            "sampler",
            "data.sampler",
            f"sampler must be one of {', '.join(DATA_SAMPLERS)} (uniform: each image once per "
            "epoch; balanced: images drawn so that each class is seen equally often)",
        )
    if data.image_size < 16:
        raise loc.error(section, "image_size", "data.image_size", "image_size must be at least 16")
    if (
        not 0 < data.val_fraction < 1
        or not 0 <= data.test_fraction < 1
        or data.val_fraction + data.test_fraction >= 1
    ):
        raise loc.error(
            section,
            "val_fraction",
            "data.val_fraction",
            "need 0 < val_fraction < 1, 0 <= test_fraction < 1 and their sum < 1",
        )


def check_resources(resources: ResourcesSpec, raw: LocatedDict, loc: Located) -> None:
    section = raw.get("resources") or LocatedDict()
    if resources.cpus <= 0:
        raise loc.error(section, "cpus", "resources.cpus", "cpus per trial must be > 0")
    # resources.gpus: between 0 and 1 (bounds.py)


def check_models(params: tuple[Param, ...], loc: Located, section: Any) -> None:
    supported = supported_backbones()
    backbones = [p for p in walk(params) if p.name == "backbone"]
    for param in backbones:
        for value in param.values:
            if is_timm(value):
                try:
                    timm_backbones.check(value)
                except UserError as exc:
                    where = f"{loc.file}:{param.line} (space.{param.column})"
                    raise UserError(exc.message, where) from None
                continue
            if value not in supported:
                hint = difflib.get_close_matches(value, supported, n=1)
                raise UserError(
                    f"unknown backbone '{value}'"
                    + (f" (did you mean '{hint[0]}'?)" if hint else "")
                    + f"; supported: {', '.join(supported)}, and timm's models as "
                    "timm/NAME (with the timm extra)",
                    f"{loc.file}:{param.line} (space.{param.column})",
                )
    for backbone, value, param in weight_pairs(params):
        try:
            resolve_weights(backbone, value)
        except UserError as exc:
            raise UserError(
                exc.message, f"{loc.file}:{param.line} (space.{param.column})"
            ) from None
    for option in BUILDER_OPTIONS:  # arguments some families' builders take, others lack
        for backbone, value, param in backbone_pairs(params, option):
            try:
                builder_kwargs(backbone, 224, False, **{option: value})
            except UserError as exc:
                raise UserError(
                    exc.message, f"{loc.file}:{param.line} (space.{param.column})"
                ) from None


def unmet_resources(resources: ResourcesSpec, nodes: list[dict[str, float]]) -> str | None:
    """Why no node can run one trial (None: some node can), from each node's
    resources as Ray reports them ({"CPU": 16.0, "GPU": 1.0, ...})."""
    for node in nodes:
        if node.get("CPU", 0.0) + 1e-9 >= resources.cpus and (
            node.get("GPU", 0.0) + 1e-9 >= resources.gpus
        ):
            return None
    sizes = sorted((n.get("CPU", 0.0), n.get("GPU", 0.0)) for n in nodes)
    largest = f"{sizes[-1][0]:g} CPUs and {sizes[-1][1]:g} GPUs" if sizes else "none"
    return (
        f"one trial asks for {resources.cpus:g} CPUs and {resources.gpus:g} GPUs "
        f"(resources:), but no node has that much (the largest has {largest})"
    )
