"""The ``space:`` section: a tree of hyperparameter distributions.

A conditional ``choice`` (options given as a mapping) carries a sub-space per
option, sampled only when that option is chosen. Each parameter has a column
name (its path joined with ``/``, as in the leaderboard) and a key that is
unique across options (the name Optuna and Ray's config use; no ``/``, which
Ray's OptunaSearch would unflatten).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from search.space.yamlfile import LocatedDict, as_number
from trainables.errors import UserError
from trainables.hparams import HPARAMS

DISTRIBUTIONS = ("choice", "int", "uniform", "loguniform")


@dataclass(frozen=True)
class Param:
    """One hyperparameter of the space and how it is drawn."""

    name: str  # the hyperparameter (a key of HPARAMS)
    column: str  # leaderboard column: path joined with '/'
    key: str  # Optuna parameter / Ray config key
    kind: str  # const | choice | int | uniform | loguniform
    values: tuple[Any, ...] = ()  # const: (value,); choice: the options
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    branches: tuple[tuple[Param, ...], ...] = ()  # per option, for a conditional choice
    line: int = 0

    def contains(self, value: Any) -> bool:
        if self.kind in ("const", "choice"):
            return value in self.values
        number = as_number(value)
        return number is not None and self.low <= number <= self.high

    def describe(self) -> str:
        if self.kind == "const":
            return repr(self.values[0])
        if self.kind == "choice":
            return f"choice {list(self.values)}"
        extra = (f" step {self.step:g}" if self.step else "") + (" log" if self.log else "")
        return f"{self.kind} [{self.low:g}, {self.high:g}]{extra}"


class Located:
    """Builds 'file:line (key.path)' locations for errors."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, container: Any, key: Any, path: str, message: str) -> UserError:
        lines = getattr(container, "lines", None)
        line = None
        if isinstance(lines, dict):
            line = lines.get(key, getattr(container, "line", None))
        elif isinstance(lines, list) and isinstance(key, int) and key < len(lines):
            line = lines[key]
        else:
            line = getattr(container, "line", None)
        where = f"{self.file}:{line}" if line else self.file
        return UserError(message, f"{where} ({path})")


def parse_params(section: Any, loc: Located) -> tuple[Param, ...]:
    return _parse_level(section, loc, "space", (), "", frozenset(section), None)


def walk(params: tuple[Param, ...]) -> Iterator[Param]:
    """Every parameter of the tree, depth first."""
    for param in params:
        yield param
        for branch in param.branches:
            yield from walk(branch)


def resolve(params: tuple[Param, ...], config: dict[str, Any]) -> dict[str, Any]:
    """A sampled config -> ``{column: value}`` of the parameters that are active."""
    out: dict[str, Any] = {}
    for param in params:
        value = config[param.key]
        out[param.column] = value
        if param.branches:
            out |= resolve(param.branches[param.values.index(value)], config)
    return out


def _parse_level(
    mapping: LocatedDict,
    loc: Located,
    path: str,
    columns: tuple[str, ...],
    key_prefix: str,
    defined: frozenset[str],
    parent: tuple[str, Any] | None,
) -> tuple[Param, ...]:
    params = []
    for name, value in mapping.items():
        here = f"{path}.{name}"
        if name not in HPARAMS:
            hint = difflib.get_close_matches(str(name), HPARAMS, n=1)
            raise loc.error(
                mapping,
                name,
                here,
                f"unknown parameter '{name}'"
                + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; known: {', '.join(HPARAMS)}",
            )
        if parent is not None and name in defined:
            raise loc.error(mapping, name, here, f"'{name}' is already set at an outer level")
        only_for = HPARAMS[name].only_for
        if parent is not None and only_for and parent != only_for:
            raise loc.error(
                mapping, name, here, f"'{name}' applies only to {only_for[0]}: {only_for[1]}"
            )
        param = _parse_param(name, value, mapping, loc, here, (*columns, name), key_prefix)
        if param.kind == "choice" and isinstance(value["choice"], dict):
            param = _with_branches(param, value, loc, here, defined | set(mapping))
        params.append(param)
    return tuple(params)


def _parse_param(
    name: str,
    value: Any,
    mapping: LocatedDict,
    loc: Located,
    path: str,
    columns: tuple[str, ...],
    key_prefix: str,
) -> Param:
    common: dict[str, Any] = {
        "name": name,
        "column": "/".join(columns),
        "key": key_prefix + name,
        "line": mapping.lines.get(name, mapping.line),
    }
    if not isinstance(value, dict):
        return Param(
            kind="const", values=(_check_value(name, value, mapping, name, loc, path),), **common
        )
    kinds = [k for k in DISTRIBUTIONS if k in value]
    extra = set(value) - set(DISTRIBUTIONS) - {"step", "log"}
    if len(kinds) != 1 or extra:
        raise loc.error(
            mapping,
            name,
            path,
            f"a distribution has exactly one of {', '.join(DISTRIBUTIONS)} "
            f"(plus optional step, log); got keys {sorted(map(str, value))}",
        )
    kind = kinds[0]
    body = value[kind]
    if kind == "choice":
        options = list(body) if isinstance(body, dict | list) else None
        if not options:
            raise loc.error(
                value, kind, f"{path}.choice", "choice needs a non-empty list of options"
            )
        keys = options if isinstance(body, dict) else range(len(options))
        checked = tuple(
            _check_value(name, v, body, k, loc, f"{path}.choice")
            for v, k in zip(options, keys, strict=True)
        )
        return Param(kind="choice", values=checked, **common)
    return _parse_range(name, kind, value, loc, path, common)


def _parse_range(name: str, kind: str, value: Any, loc: Located, path: str, common: dict) -> Param:
    spec = HPARAMS[name]
    want_int = kind == "int"
    if want_int != (spec.type is int) or spec.type not in (int, float):
        allowed = (
            "int" if spec.type is int else "uniform, loguniform" if spec.type is float else "choice"
        )
        raise loc.error(
            value, kind, f"{path}.{kind}", f"'{name}' is a {spec.type.__name__}: use {allowed}"
        )
    bounds = value[kind]
    numbers = (
        [as_number(b) for b in bounds] if isinstance(bounds, list) and len(bounds) == 2 else None
    )
    if (
        numbers is None
        or None in numbers
        or (want_int and any(not isinstance(b, int) for b in bounds))
    ):
        raise loc.error(
            value,
            kind,
            f"{path}.{kind}",
            f"{kind} takes [low, high], two {'integers' if want_int else 'numbers'}",
        )
    low, high = float(numbers[0] or 0), float(numbers[1] or 0)  # both checked above
    if low > high or (low == high and not want_int):
        raise loc.error(
            value,
            kind,
            f"{path}.{kind}",
            f"empty or reversed range [{low:g}, {high:g}]; write [low, high] with low < high",
        )
    for bound in (low, high):
        _check_bounds(name, bound, value, kind, loc, f"{path}.{kind}")
    log = kind == "loguniform" or value.get("log") is True
    if log and low <= 0:
        raise loc.error(value, kind, f"{path}.{kind}", "a log-scaled range needs low > 0")
    step = as_number(value.get("step")) if "step" in value else None
    if "step" in value and (
        step is None or step <= 0 or (want_int and not isinstance(value["step"], int))
    ):
        raise loc.error(
            value, "step", f"{path}.step", "step must be a positive number (an integer for int)"
        )
    if log and step not in (None, 1):
        raise loc.error(
            value, "step", f"{path}.step", "Optuna cannot combine step with a log scale; drop one"
        )
    if "log" in value and not isinstance(value["log"], bool):
        raise loc.error(value, "log", f"{path}.log", "log must be true or false")
    return Param(kind=kind, low=low, high=high, step=step, log=log, **common)


def _with_branches(
    param: Param, value: LocatedDict, loc: Located, path: str, defined: frozenset[str]
) -> Param:
    body = value["choice"]
    branches: list[tuple[Param, ...]] = []
    for option, raw in zip(param.values, body.values(), strict=True):
        here = f"{path}.choice.{option}"
        if raw in (None, {}):
            branches.append(())
            continue
        if not isinstance(raw, LocatedDict):
            raise loc.error(
                body, option, here, "an option's sub-space must be a mapping (or empty)"
            )
        key_prefix = f"{param.key}.{option}."
        columns = tuple(param.column.split("/"))
        branches.append(
            _parse_level(raw, loc, here, columns, key_prefix, defined, (param.name, option))
        )
    return Param(**{**param.__dict__, "branches": tuple(branches)})


def _check_value(name: str, value: Any, container: Any, key: Any, loc: Located, path: str) -> Any:
    spec = HPARAMS[name]
    if spec.type is str and name == "weights" and value is None:
        value = "none"
    if spec.type is float:
        number = as_number(value)
        if number is None:
            raise loc.error(container, key, path, f"'{name}' takes a number, got {value!r}")
        value = number
    elif value in spec.words:
        return value
    elif spec.type is int and (isinstance(value, bool) or not isinstance(value, int)):
        also = "".join(f" or {w}" for w in spec.words)
        raise loc.error(container, key, path, f"'{name}' takes an integer{also}, got {value!r}")
    elif spec.type is bool and not isinstance(value, bool):
        raise loc.error(container, key, path, f"'{name}' takes true or false, got {value!r}")
    elif spec.type is str and not isinstance(value, str):
        raise loc.error(container, key, path, f"'{name}' takes a name, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise loc.error(
            container,
            key,
            path,
            f"'{name}' must be one of {', '.join(spec.choices)}; got {value!r}",
        )
    if spec.type in (int, float):
        _check_bounds(name, value, container, key, loc, path)
    return value


def _check_bounds(
    name: str, value: float, container: Any, key: Any, loc: Located, path: str
) -> None:
    spec = HPARAMS[name]
    if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value >= spec.hi):
        bounds = f">= {spec.lo:g}" + (f" and < {spec.hi:g}" if spec.hi is not None else "")
        raise loc.error(container, key, path, f"'{name}' must be {bounds}; got {value:g}")


def weight_pairs(params: tuple[Param, ...]) -> Iterator[tuple[str, str, Param]]:
    """(backbone, weights value, weights parameter) for every pair that can be sampled.

    A space without ``weights`` trains from scratch.
    """
    for backbone, value, param in backbone_pairs(params, "weights"):
        yield backbone, str(value), param


def backbone_pairs(params: tuple[Param, ...], name: str) -> Iterator[tuple[str, Any, Param]]:
    """(backbone, value, parameter) for every pair of a backbone and a value of
    the hyperparameter ``name`` that can be sampled together.

    One set under a backbone's option pairs with that backbone only; one set
    elsewhere pairs with every backbone in scope (all of them at the top
    level). A range pairs by its upper bound.
    """
    everywhere = [v for p in walk(params) if p.name == "backbone" for v in p.values]

    def visit(level: tuple[Param, ...], backbones: list[str]) -> Iterator[tuple[str, Any, Param]]:
        for param in level:
            if param.name == name:
                values = param.values or (param.high,)
                yield from ((b, v, param) for b in backbones for v in values)
            for option, branch in zip(param.values, param.branches, strict=False):
                yield from visit(branch, [option] if param.name == "backbone" else backbones)

    seen = set()
    for pair in visit(params, everywhere):
        if pair[:2] not in seen:
            seen.add(pair[:2])
            yield pair
