"""Safe YAML loading that remembers the line of every key, for error messages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from trainables.errors import UserError


class LocatedDict(dict):
    """A mapping from YAML that knows its own line and the line of each key."""

    line: int = 0
    lines: dict[Any, int]


class LocatedList(list):
    line: int = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.line, result.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result:
            raise UserError(f"key '{key}' appears twice; keep one", f"{loader.name}:{line}")
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


MAX_BYTES = 1024**2  # a space file is a few KiB
MAX_NODES = 100_000  # values once every alias is expanded: an alias bomb is refused


def read_text(path: Path) -> str:
    """A space file's text: UTF-8 (a BOM allowed), no NUL, at most MAX_BYTES."""
    if not path.is_file():
        raise UserError("file not found; give the path of a search-space YAML file", str(path))
    data = path.read_bytes()
    if len(data) > MAX_BYTES:
        raise UserError(
            f"{len(data):,} bytes is not a space file (those are a few KB; the limit is "
            f"{MAX_BYTES:,}); give the YAML file of a search space",
            str(path),
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} cannot be "
            "read; save the file as UTF-8 (Latin-1 and UTF-16 files are not read)",
            str(path),
        ) from None
    if "\0" in text:
        offset = data.index(b"\0")
        raise UserError(f"a NUL byte at offset {offset}: this is not a text file", str(path))
    return text


def load_yaml(path: Path) -> LocatedDict:
    """Reads a YAML mapping with safe-loading semantics and line numbers."""
    text = read_text(path)
    try:
        loader = _Loader(text)  # its reader refuses control characters at once
    except yaml.YAMLError as exc:
        raise UserError(f"not a YAML text file ({exc})", str(path)) from None
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_size(node, str(path))
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise UserError(f"YAML syntax error: {problem}; fix the line", f"{path}{line}") from None
    except yaml.YAMLError as exc:  # ReaderError: a control character
        raise UserError(f"not a YAML text file ({exc})", str(path)) from None
    except RecursionError:
        raise UserError("values nested too deeply for a space file", str(path)) from None
    finally:
        loader.dispose()
    if not isinstance(data, LocatedDict):
        raise UserError(
            "a space file must be a YAML mapping (name:, data:, space:, ...)", str(path)
        )
    return data


def _check_size(root: yaml.Node, where: str) -> None:
    """Refuses a document whose values, with its aliases expanded, exceed MAX_NODES.

    Sizes are counted per node once (a node an alias repeats is counted each
    time it is used, but computed once), so a bomb is measured in a moment.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # being counted: met again below itself, it contains itself
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not expanded:
            if id(node) in open_nodes:
                raise UserError("a value contains itself (an alias inside its own anchor)", where)
            open_nodes.add(id(node))
            stack.append((node, True))
            stack += [(child, False) for child in children if id(child) not in sizes]
            continue
        open_nodes.discard(id(node))
        sizes[id(node)] = 1 + sum(sizes.get(id(child), 1) for child in children)
        if sizes[id(node)] > MAX_NODES:
            raise UserError(
                f"more than {MAX_NODES:,} values once its aliases (*name) are expanded; "
                "a space file holds a few hundred",
                where,
            )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def plain(value: Any) -> Any:
    """Located containers -> plain dicts and lists (for yaml.safe_dump)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def as_number(value: Any) -> float | None:
    """A YAML number, including ``1e-5`` which PyYAML reads as a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    return None
