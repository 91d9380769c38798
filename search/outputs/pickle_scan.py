"""Reads a pickle without running it: which globals would unpickling import?

``scan`` walks a pickle with Python's own unpickler, so every opcode means
what it means to Ray's ``pickle.loads``, but ``find_class`` hands back an
inert stand-in for every global: nothing named is imported from the pickle
or called. Each global must pass ``allowed``: classes of the packages whose
objects Ray, Optuna and ftsweep save in a sweep's state, the few rebuild
functions those pickles name, and plain built-in types. Used by trust.py
for ``ftsweep resume --trust-results``.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
from typing import Any

_FALLBACK = "CLOUDPICKLE_FALLBACK"  # Ray's marker of a cloudpickle blob inside its JSON


def scan_file(name: str, data: bytes) -> str | None:
    """None if every pickle in the file imports only what ``allowed`` admits; else why not.

    A JSON file (experiment_state-S.json, ftsweep's searcher-state-S.json) is
    scanned for the cloudpickle blobs Ray embeds; anything else (tuner.pkl,
    search_gen_state-S.json, despite its name) is a pickle.
    """
    if name.startswith(("experiment_state-", "searcher-state-")) and name.endswith(".json"):
        try:
            blobs = _fallback_blobs(json.loads(data))
        except ValueError:
            return "is not valid JSON"
        for blob in blobs:
            if problem := scan(blob):
                return problem
        return None
    return scan(data)


def _fallback_blobs(value: Any) -> list[bytes]:
    """The cloudpickle blobs in Ray's JSON (whose trial entries are JSON strings in turn)."""
    if isinstance(value, dict):
        if value.get("_type") == _FALLBACK and isinstance(value.get("value"), str):
            return [bytes.fromhex(value["value"])]
        return [b for v in value.values() for b in _fallback_blobs(v)]
    if isinstance(value, list):
        return [b for v in value for b in _fallback_blobs(v)]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return _fallback_blobs(json.loads(value))
        except ValueError:
            return []
    return []


class _Stub:
    """What the scan's unpickler builds in place of every global: inert, accepts anything."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass


class _Refused(Exception):
    pass


class _Scanner(pickle.Unpickler):
    """Walks a pickle as Python's unpickler does, but every global is a _Stub:
    nothing it names is imported or called."""

    def find_class(self, module: str, name: str) -> Any:
        if not allowed(module, name):
            raise _Refused(f"{module}.{name}")
        return _Stub

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"a persistent id ({pid!r})")


def scan(data: bytes) -> str | None:
    """None if the pickle imports only what ``allowed`` admits; else why not. Runs nothing."""
    try:
        _Scanner(io.BytesIO(data)).load()
    except _Refused as refused:
        return f"would import {refused} (not a class Ray, Optuna or ftsweep saves)"
    except Exception as exc:  # a cut-short or malformed pickle
        return f"is not a pickle ftsweep can read ({type(exc).__name__}: {exc})"
    return None


# Modules whose classes Ray, Optuna and ftsweep pickle into a sweep's state
# (any class there; functions only as listed in _FUNCTIONS).
_CLASS_MODULES = (
    "search.", "trainables.", "optuna.", "ray.tune.", "ray.train.", "ray.air.",
    "numpy._core.", "numpy.core.", "numpy.random.", "numpy.dtypes", "pyarrow._fs", "pyarrow.fs",
)  # fmt: skip
_FUNCTIONS = {
    ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("optuna.samplers._tpe.sampler", "default_weights"),
    ("optuna.samplers._tpe.sampler", "default_gamma"),
    ("optuna.samplers._tpe.sampler", "hyperopt_default_gamma"),
    ("pyarrow._fs", "FileSystem._from_uri"),
    ("ray.train._internal.storage", "_upload_to_fs_path"),
    ("search.engine.tuner", "_trial_dirname"),
    ("search.tuner", "_trial_dirname"),  # sweeps written before search/ had packages
}
_BUILTINS = {
    "set", "frozenset", "dict", "list", "tuple", "int", "float", "complex", "str",
    "bytes", "bytearray", "bool", "slice", "range", "object", "NoneType",
}  # fmt: skip
_PLAIN = {
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "timedelta"),
    ("datetime", "timezone"), ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("collections", "deque"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath"), ("uuid", "UUID"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
}  # fmt: skip


def allowed(module: str, name: str) -> bool:
    """Whether a pickle in a sweep's state may import ``module.name``.

    Classes of the modules Ray, Optuna and ftsweep save (their constructors
    and ``__setstate__`` are what unpickling calls), the few rebuild
    functions those pickles name, and plain built-in types. Never a
    function that runs code or touches the system (eval, exec, getattr,
    os.system, subprocess, cloudpickle's function rebuilders).
    """
    if (module, name) in _FUNCTIONS or (module, name) in _PLAIN:
        return True
    if module in ("builtins", "__builtin__"):
        return name in _BUILTINS
    if not any(module.startswith(p) or module == p.rstrip(".") for p in _CLASS_MODULES):
        return False
    return _is_class(module, name)


def _is_class(module: str, name: str) -> bool:
    """Whether ``module.name`` is a class (its module, one of _CLASS_MODULES, is imported)."""
    try:
        found: Any = importlib.import_module(module)
    except Exception:
        return False
    for part in name.split("."):
        found = getattr(found, part, None)
    return isinstance(found, type)
