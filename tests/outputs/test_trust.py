"""A results folder is data: a pickle planted in a sweep's tune/ folder never runs.

The attack: a sweep folder on shared storage, or one a colleague sends, whose
Ray state files (tuner.pkl, search_gen_state-S.json, searcher-state-S.pkl,
a cloudpickle blob inside experiment_state-S.json) were replaced by a pickle
that runs a command. `ftsweep resume` must refuse each before Ray or ftsweep
unpickles it, with and without --trust-results. The sweep is a real one
(tests/fixtures/legacy-sweep, written by ftsweep and Ray), signed here as
ftsweep signs its own; nothing in this module starts Ray.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
from pathlib import Path

import pytest

from search.cli import main
from search.outputs import trust
from search.outputs.pickle_scan import scan, scan_file
from trainables.errors import UserError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-sweep"
SESSION = "2026-12-04_15-58-24"


class _Command:
    """Unpickled, runs a shell command (what an attacker plants)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _planted(marker: Path) -> bytes:
    return pickle.dumps(_Command(f"touch {marker}"))


@pytest.fixture
def sweep(tmp_path):
    """A copy of a real sweep, signed with this user's key as ftsweep signs its own."""
    folder = tmp_path / "results" / "legacy"
    shutil.copytree(FIXTURE, folder)
    trust.sign(str(folder / "tune"))
    return folder


def _plant(tune: Path, name: str, marker: Path) -> None:
    if name.startswith("experiment_state"):
        state = json.loads((tune / name).read_text())
        blob = {"_type": "CLOUDPICKLE_FALLBACK", "value": _planted(marker).hex()}
        state["runner_data"]["_planted"] = blob
        (tune / name).write_text(json.dumps(state))
    else:
        (tune / name).write_bytes(_planted(marker))


@pytest.mark.parametrize(
    "name",
    [
        "tuner.pkl",
        f"search_gen_state-{SESSION}.json",
        f"searcher-state-{SESSION}.pkl",
        f"experiment_state-{SESSION}.json",
    ],
)
def test_a_planted_pickle_never_runs_with_or_without_trust(sweep, tmp_path, capsys, name):
    marker = tmp_path / "ran"
    _plant(sweep / "tune", name, marker)
    args = ["resume", str(sweep), "--results", str(tmp_path / "results")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert name in err and "--trust-results" in err and "Traceback" not in err
    assert main([*args, "--trust-results"]) == 2
    err = capsys.readouterr().err
    assert "would import posix.system" in err or "would import os.system" in err, err
    assert "Traceback" not in err
    assert not marker.exists()


def test_a_sweep_signed_with_another_users_key_needs_trust(sweep, tmp_path, monkeypatch):
    assert trust.verify(str(sweep / "tune"), trust=False) == []  # this user's: accepted
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-user"))
    with pytest.raises(UserError, match="not written by ftsweep with this user's key"):
        trust.verify(str(sweep / "tune"), trust=False)
    # Trusted once (its scan passes: Ray's, Optuna's and ftsweep's classes only),
    # then signed with this key: the next resume needs no flag.
    assert len(trust.verify(str(sweep / "tune"), trust=True)) == 4
    assert trust.verify(str(sweep / "tune"), trust=False) == []


def test_a_team_shares_one_key_file(sweep, tmp_path, monkeypatch):
    team_key = tmp_path / "team.key"
    monkeypatch.setenv(trust.KEY_ENV, str(team_key))
    with pytest.raises(UserError, match="names a key file that does not exist"):
        trust.results_key()
    monkeypatch.delenv(trust.KEY_ENV)
    mine = trust.results_key()
    team_key.write_bytes(mine)
    monkeypatch.setenv(trust.KEY_ENV, str(team_key))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "another-machine"))
    assert trust.verify(str(sweep / "tune"), trust=False) == []


def test_the_key_is_created_once_readable_by_its_user_only(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key = trust.results_key()
    path = tmp_path / "config" / "ftsweep" / "results.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert trust.results_key() == key and len(key) >= 32


def test_an_edited_newest_save_is_replaced_by_its_signed_backup(sweep, caplog):
    from search.outputs.ray_files import BACKUP_DIR, repair_state

    tune = sweep / "tune"
    backup = tune / BACKUP_DIR
    backup.mkdir()
    for path in tune.glob(f"*{SESSION}*"):
        shutil.copy2(path, backup / path.name)
    searcher = tune / f"searcher-state-{SESSION}.pkl"
    searcher.write_bytes(pickle.dumps({"edited": True}))  # harmless, but not ftsweep's
    key, signatures = trust.results_key(), trust.read_signatures(str(tune))
    repaired = repair_state(tune, lambda p, n: trust.signed(p, signatures, key, n))
    assert repaired and "not signed by ftsweep" in repaired[0]
    assert searcher.read_bytes() == (backup / searcher.name).read_bytes()
    assert trust.verify(str(tune), trust=False) == []


def test_the_scan_runs_nothing_and_admits_only_what_sweeps_hold(tmp_path):
    marker = tmp_path / "ran"
    assert "system (not a class" in str(scan(_planted(marker)))
    assert not marker.exists()
    assert "builtins.eval" in str(scan(pickle.dumps(_Eval())))
    assert "not a pickle" in str(scan(_planted(marker)[:-3]))
    # Every pickle of a real sweep passes.
    for path in (FIXTURE / "tune").iterdir():
        if path.suffix in (".pkl", ".json"):
            assert scan_file(path.name, path.read_bytes()) is None, path.name


class _Eval:
    def __reduce__(self):
        return (eval, ("1",))
