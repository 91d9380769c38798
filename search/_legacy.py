"""Old module paths of the classes Ray pickled into sweeps written before search/
was grouped into packages, so that those sweeps still resume.

Ray stores some of our objects in tune/ by module path: the searcher with its
define-by-run space (tuner.pkl, searcher-state-*.pkl), the state backup
callback (tuner.pkl) and the trial folder namer (search_gen_state-*.json).
Unpickling one imports its module by the old name; ``install`` adds an import
hook that answers each old name below with a module holding the same objects
from where they live now. Nothing here runs unless such a name is imported.

Moving a class that Ray pickles: add its old path here (tests/test_layout.py
checks that every entry resolves).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

# old module -> {name: module it lives in now}
MOVED: dict[str, dict[str, str]] = {
    "search.params": {"Param": "search.space.params"},
    "search.sampling": {"DefineByRun": "search.engine.searcher"},
    "search.state": {"StateBackup": "search.engine.state_backup"},
    "search.tuner": {
        "PruningOptunaSearch": "search.engine.searcher",
        "ResumableASHA": "search.engine.asha",
        "_trial_dirname": "search.engine.tuner",
    },
    "search.progress": {"SweepProgress": "search.engine.progress"},
    "search.tracking": {
        "SweepTensorBoard": "search.engine.tracking",
        "SweepMLflow": "search.engine.tracking",
    },
}


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self,
        name: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(name, self, origin=f"moved ({__name__})")

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return types.ModuleType(spec.name, f"Moved; the names below live elsewhere ({__name__}).")

    def exec_module(self, module: types.ModuleType) -> None:
        for name, home in MOVED[module.__name__].items():
            setattr(module, name, getattr(importlib.import_module(home), name))


def install() -> None:
    """Adds the hook once (after the regular finders: a real module always wins)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
