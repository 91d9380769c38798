"""A resume refuses an edited space.yaml it cannot honour, and applies the rest.

The accident: space.yaml edited between the night's run and the morning's
resume (image_size 16 -> 32, max_epochs 3 -> 1) was applied silently, and one
trial trained at two sizes; a narrowed range made every trial error. Now the
sweep keeps the space it started from (space.original.yaml) and a resume
compares the two before anything starts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.outputs.edits import changes, split

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-sweep"


@pytest.fixture
def sweep(tmp_path):
    folder = tmp_path / "results" / "legacy"
    shutil.copytree(FIXTURE, folder)
    shutil.copy(folder / "space.yaml", folder / "space.original.yaml")  # as `run` keeps it
    return folder


def _edit(sweep: Path, key: str, value) -> None:
    raw = yaml.safe_load((sweep / "space.yaml").read_text())
    *path, last = key.split(".")
    inner = raw
    for part in path:
        inner = inner.setdefault(part, {})
    inner[last] = value
    (sweep / "space.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("data.image_size", 32, "data.image_size: 16 -> 32"),
        ("trial.max_epochs", 3, "trial.max_epochs: 1 -> 3"),
        ("trial.batch_size", 32, "trial.batch_size: 64 -> 32"),
        ("space.lr.loguniform", [0.0001, 0.001], "space.lr.loguniform: [0.001, 0.01] -> [0.0001"),
        ("search.sampler", "random", "search.sampler: 'tpe' -> 'random'"),
        ("search.num_samples", 5, "resume --add"),
    ],
)
def test_an_edit_that_changes_what_trials_compute_is_refused(sweep, capsys, key, value, shown):
    _edit(sweep, key, value)
    assert main(["resume", str(sweep), "--results", str(sweep.parent), "--trust-results"]) == 2
    err = capsys.readouterr().err
    assert shown in err and "space.original.yaml" in err and "Traceback" not in err
    assert not any((sweep / "tune").glob("experiment_state-*.damaged"))  # nothing touched


def test_how_the_sweep_runs_may_change():
    before = {"search": {"max_concurrent": 1, "seed": 5}, "resources": {"cpus": 1}}
    after = {
        "search": {"max_concurrent": 4, "seed": 5, "time_budget": "2h"},
        "resources": {"cpus": 2},
    }
    refused, applied = split(changes(before, after))
    assert refused == []
    assert applied == [
        "resources.cpus: 1 -> 2",
        "search.max_concurrent: 1 -> 4",
        "search.time_budget: (absent) -> '2h'",
    ]
