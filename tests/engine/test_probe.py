"""The probe of Ray's and Optuna's internals (search/engine/probe.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from search.cli import main
from search.engine import probe
from trainables.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_everything_ftsweep_relies_on_is_there():
    assert probe.problems() == []


def test_a_missing_internal_stops_run_with_the_versions(monkeypatch, write_space, tmp_path, capsys):
    checks = probe._checks()
    monkeypatch.setattr(
        probe, "_checks", lambda: [*checks, ("ASHAScheduler._brackets", lambda: False)]
    )
    probe.check.cache_clear()
    try:
        with pytest.raises(UserError, match=r"ASHAScheduler\._brackets.*Installed: ray \d"):
            probe.check()
        space = write_space(
            "name: p\ndata: {source: digits, image_size: 16}\nspace: {backbone: resnet18}\n"
        )
        code = main(["run", str(space), "--results", str(tmp_path / "results")])
        assert code == 2
        err = capsys.readouterr().err
        assert "ftsweep supports ray >=2.57,<2.61" in err and "Traceback" not in err
        assert not (tmp_path / "results").exists()  # nothing started
    finally:
        probe.check.cache_clear()


def test_a_check_that_raises_counts_as_missing(monkeypatch):
    def broken() -> bool:
        raise AttributeError("no such thing")

    monkeypatch.setattr(probe, "_checks", lambda: [("a renamed module", broken)])
    assert probe.problems() == ["a renamed module (AttributeError: no such thing)"]


def test_pyproject_gives_the_ranges_the_probe_supports():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, (low, high) in {
        "ray[tune]": probe.RAY_SUPPORTED,
        "optuna": probe.OPTUNA_SUPPORTED,
    }.items():
        spec = next(d for d in deps if d.startswith(name))
        assert re.sub(r"\s", "", spec) == f"{name}>={low},<{high}", spec
