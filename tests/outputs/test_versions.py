"""A sweep records the versions that ran it; a resume under another Ray stops.

The accident: an upgrade between nights. Ray does not keep its saved
experiment (tune/) readable across releases; Optuna's history is ftsweep's
own JSON now, so an Optuna upgrade is listed, not refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from search.cli import main
from search.outputs import versions
from trainables.errors import UserError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-sweep"


def _written_by(sweep: Path, **changed: str) -> None:
    path = sweep / "versions.json"
    saved = json.loads(path.read_text())
    saved["written_by"].update(changed)
    path.write_text(json.dumps(saved))


def test_an_optuna_upgrade_is_listed_and_another_ray_is_refused(tmp_path):
    versions.record(tmp_path)
    assert versions.check(tmp_path) == []
    _written_by(tmp_path, optuna="4.9.0", torch="2.11.0")
    now = versions.installed()
    assert set(versions.check(tmp_path)) == {
        f"optuna 4.9.0 -> {now['optuna']}",
        f"torch 2.11.0 -> {now['torch']}",
    }
    _written_by(tmp_path, ray="2.59.0")
    with pytest.raises(UserError, match=r"written by ray 2\.59\.0, and this is ray"):
        versions.check(tmp_path)


def test_a_resume_is_recorded(tmp_path):
    versions.record(tmp_path)
    versions.record(tmp_path, resumed=True)
    saved = json.loads((tmp_path / "versions.json").read_text())
    assert saved["resumed_by"] == [versions.installed()]
    assert saved["written_by"]["ray"] == versions.installed()["ray"]


def test_resume_under_another_ray_exits_2_before_anything_starts(tmp_path, capsys):
    sweep = tmp_path / "results" / "legacy"
    shutil.copytree(FIXTURE, sweep)
    versions.record(sweep)
    _written_by(sweep, ray="2.59.0")
    assert main(["resume", str(sweep), "--results", str(sweep.parent), "--trust-results"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'ray[tune]==2.59.0'" in err and "Traceback" not in err
