"""A trial that no node can run is refused before it waits forever.

The input: `resources: {cpus: 64}` (or `{gpus: 1}` without a GPU) on a
2-CPU machine. `run` waited forever, printing Ray's "No available node types
can fulfill resource request" every 35 s; `validate` said "at most 0 trials
at once" without a warning. Ray's own start-up lines (the token notice,
"Started a local Ray instance") are shown with --verbose only.
"""

from __future__ import annotations

import os

import pytest
import torch

from search.cli import main
from tests.conftest import FAST, ftsweep

pytestmark = pytest.mark.slow

RAY_NOISE = ("Token authentication is enabled", "Started a local Ray instance")


def test_resources_no_node_has_stop_run_and_warn_in_validate(tmp_path, capsys, ray_stops):
    asks = ["{cpus: 64}"] + ([] if torch.cuda.is_available() else ["{cpus: 1, gpus: 1}"])
    for number, resources in enumerate(asks):
        space = tmp_path / f"big{number}.yaml"
        space.write_text(FAST + f"resources: {resources}\n")
        assert main(["validate", str(space), "--no-timing"]) == 0
        out = capsys.readouterr().out
        assert "warning: one trial asks for" in out and "no node has that much" in out, out
        results = str(tmp_path / "results")
        if number == 0:  # as a user runs it: a process of its own, all it prints
            done = ftsweep("run", str(space), "--results", results, timeout=180)
            code, err = done.returncode, done.stderr + done.stdout
            assert not [line for line in RAY_NOISE if line in err], err
        else:
            code, err = main(["run", str(space), "--results", results]), capsys.readouterr().err
        assert code == 2, err[-2000:]
        assert "would wait forever" in err and "Traceback" not in err


def test_rays_warning_of_frequent_state_saves_is_off_in_the_compact_view(monkeypatch):
    """Three lines after every few epochs on short epochs, where ftsweep saves
    the state each epoch on purpose; --verbose keeps Ray's own settings."""
    from search.engine.tuner import SNAPSHOT_WARNING, ray_output

    monkeypatch.delenv(SNAPSHOT_WARNING, raising=False)
    with ray_output(verbose=False):
        assert os.environ[SNAPSHOT_WARNING] == "0"
    assert SNAPSHOT_WARNING not in os.environ
    with ray_output(verbose=True):
        assert SNAPSHOT_WARNING not in os.environ
