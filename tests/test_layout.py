"""The layout shows the design, and this test keeps it (docs/architecture.md).

Imports flow one way: cli -> sweep -> {preflight, engine, model} -> outputs
-> space -> trainables. The three middle packages do not import each other.
Ray is imported only by engine/, by outputs/ray_files.py (Ray's saved files)
and by the trainable Ray runs (trainables/finetune.py, Ray Tune's public
report and checkpoint API); Optuna only by engine/. No import cycle, and no
private name (``_x``) is imported from another package.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from search import _legacy

REPO = Path(__file__).resolve().parent.parent

# Package -> layer; a module may import its own layer's package and lower
# layers only. The top (search/__init__, __main__, _legacy) is the public API.
LAYERS = {
    "search.cli": 6,
    "search.sweep": 5,
    "search.preflight": 4,
    "search.engine": 4,
    "search.model": 4,
    "search.outputs": 3,
    "search.space": 2,
    "trainables": 1,
}
RAY_ALLOWED = ("search.engine", "search.outputs.ray_files", "trainables.finetune")
OPTUNA_ALLOWED = ("search.engine",)
# What a trial's worker process imports before its first epoch (trainables/ and
# the space it resolves its configuration with) may not import these at its
# top: each new worker would pay their import (scikit-learn alone 1.3 s).
WORKER_PACKAGES = ("trainables", "search.space")
NOT_IN_WORKERS = ("sklearn", "scipy", "matplotlib", "optuna", "mlflow")
MAX_MODULE_LINES = 360  # "about 350"
MAX_FUNCTION_LINES = 65  # "about 60", its docstring not counted


def _modules() -> dict[str, Path]:
    found = {}
    for root in ("search", "trainables"):
        for path in (REPO / root).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
    return found


def _package(module: str) -> str | None:
    for package in sorted(LAYERS, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    return None


def _ours(module: str) -> str | None:
    """The module of ours an import names (a package's module or the package)."""
    while module and module not in MODULES:
        module = module.rpartition(".")[0]
    return module or None


def test_imports_flow_one_way():
    wrong = []
    for module, path in MODULES.items():
        source = _package(module)
        if source is None:
            continue  # search/__init__, __main__, _legacy: the top
        for imported, _, line in _imports(path):
            target = _ours(imported)
            package = _package(target) if target else None
            if package is None or package == source:
                continue
            if LAYERS[package] >= LAYERS[source]:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {imported} ({package})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


@pytest.mark.parametrize(("library", "allowed"), [("ray", RAY_ALLOWED), ("optuna", OPTUNA_ALLOWED)])
def test_ray_and_optuna_only_behind_their_door(library, allowed):
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {imported}"
        for module, path in MODULES.items()
        if not any(module == a or module.startswith(a + ".") for a in allowed)
        for imported, _, line in _imports(path)
        if imported == library or imported.startswith(library + ".")
    ]
    assert not wrong, f"{library} imported outside {allowed}:\n" + "\n".join(wrong)


def test_trial_workers_import_only_what_they_use():
    found = []
    for module, path in MODULES.items():
        if not module.startswith(WORKER_PACKAGES):
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body:  # the module's top, where an import runs on import
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [
                f"{module}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in NOT_IN_WORKERS
            ]
    assert not found, "import these where they are used: " + ", ".join(found)


def test_no_import_cycles():
    graph = {
        module: {t for imported, _, _ in _imports(path) if (t := _ours(imported)) and t != module}
        for module, path in MODULES.items()
    }
    # A package's __init__ importing its own modules is how packages work; the
    # cycle check is between modules.
    for module in graph:
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    cycles, state = [], dict.fromkeys(graph, 0)

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif state.get(nxt) == 0:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if state[module] == 0:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_imported_across_packages():
    wrong = []
    for module, path in MODULES.items():
        for imported, names, line in _imports(path):
            target = _ours(imported)
            if target is None or _package(target) == _package(module):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private or any(p.startswith("_") for p in imported.split(".")[1:]):
                wrong.append(f"{path.relative_to(REPO)}:{line} {imported} {private}")
    assert not wrong, "private names imported across packages:\n" + "\n".join(wrong)


def test_modules_and_functions_stay_small():
    """No module over about 350 lines and no function over about 60 (its
    docstring not counted), unless its docstring says why (``Long: ...``)."""
    wrong = []
    for path in MODULES.values():
        text = path.read_text()
        tree = ast.parse(text)
        doc = ast.get_docstring(tree) or ""
        if len(text.splitlines()) > MAX_MODULE_LINES and "Long:" not in doc:
            wrong.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    length -= first.end_lineno - first.lineno + 1  # the docstring
                if length > MAX_FUNCTION_LINES and "Long:" not in (ast.get_docstring(node) or ""):
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length}")
    assert not wrong, "too long, with no reason given:\n" + "\n".join(wrong)


def test_every_moved_name_still_resolves():
    for old, names in _legacy.MOVED.items():
        module = importlib.import_module(old)
        for name, home in names.items():
            assert getattr(module, name) is getattr(importlib.import_module(home), name)
