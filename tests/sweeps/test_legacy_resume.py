"""A sweep written by an earlier layout of ftsweep still resumes to the end.

Ray pickles some of our classes by module path into tune/ (the searcher with
its define-by-run space, the state backup callback, the trial folder namer).
tests/fixtures/legacy-sweep was written by ftsweep at commit bdb7a72, before
search/ was grouped into packages, and killed with its first trial created and
not yet started: its pickles name search.tuner, search.sampling, search.params
and search.state.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from search.cli import main

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-sweep"


def test_old_layout_sweep_resumes_to_completion(tmp_path, capsys, caplog, ray_stops):
    sweep = tmp_path / "results" / "legacy"
    shutil.copytree(FIXTURE, sweep)
    # How the sweep runs may change between nights: trials at once (applied, listed).
    shutil.copy(sweep / "space.yaml", sweep / "space.original.yaml")
    edited = (sweep / "space.yaml").read_text().replace("max_concurrent: 1", "max_concurrent: 2")
    (sweep / "space.yaml").write_text(edited)
    args = ["resume", str(sweep), "--results", str(tmp_path / "results")]
    # Written before ftsweep signed its state: refused until trusted once.
    assert main(args) == 2
    assert "--trust-results" in capsys.readouterr().err
    # In this process, as `ftsweep resume` runs it (it starts Ray here).
    done = main([*args, "--trust-results"])
    assert done == 0, capsys.readouterr().err[-3000:]
    assert "applying search.max_concurrent: 1 -> 2" in caplog.text
    board = pd.read_csv(sweep / "leaderboard.csv")
    assert len(board) == 2  # the planned trials, the one the old run created among them
    assert "9a5998b4" in set(board["trial_id"].astype(str))
    assert set(board["status"]) <= {"completed", "stopped_early"}
    assert (sweep / "best" / "model.safetensors").is_file()
    # New trials went to the copy, not to the folder the old run wrote to.
    assert len(list((sweep / "tune").glob("trial_*"))) == 2
