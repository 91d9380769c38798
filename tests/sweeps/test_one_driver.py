"""One driver per sweep folder.

The accidents: the same `ftsweep run` started twice (two terminals, a
scheduler's retry) 0.5 s apart wrote both sweeps into one folder, 8 trial
folders for 4 planned; `ftsweep resume` beside the live run trained the same
trials twice. Now the second run gets NAME-2, and a resume beside a live
driver stops with exit 2 naming it.

Two drivers here are two processes in `run`'s first step (prepare_sweep:
the folder is claimed there, before Ray starts), holding their folders as a
running sweep does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.cli import main
from search.outputs.lock import Held, try_lock
from tests.conftest import FAST, REPO

DRIVER = """
import sys, time
from pathlib import Path
from search.sweep import prepare_sweep
space, folder = prepare_sweep(Path(sys.argv[1]), Path(sys.argv[2]), {})
print(folder.name, flush=True)
time.sleep(120)  # a sweep running
"""


def _driver(space: Path, results: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(space), str(results)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def test_two_runs_at_once_get_two_folders_and_a_resume_beside_them_is_refused(tmp_path, capsys):
    space = tmp_path / "t.yaml"
    space.write_text(FAST)
    results = tmp_path / "results"
    first = _driver(space, results)
    time.sleep(0.5)
    second = _driver(space, results)
    try:
        assert first.stdout is not None and second.stdout is not None
        assert sorted([first.stdout.readline().strip(), second.stdout.readline().strip()]) == [
            "t",
            "t-2",
        ]
        # In this process, as `ftsweep resume` runs it: the lock is its first step.
        assert main(["resume", str(results / "t")]) == 2
        err = capsys.readouterr().err
        assert "another driver is running this sweep (pid " in err and "Traceback" not in err
        # status names the live driver rather than guessing from the state's age.
        assert main(["status", str(results / "t")]) == 0
        out = capsys.readouterr().out
        assert "running now: pid " in out and "`ftsweep " in out, out
        assert "resumable: not while that driver runs" in out
    finally:
        for driver in (first, second):
            driver.kill()
            driver.communicate(timeout=30)
    # Its driver gone (however it ended), the folder is free to resume.
    assert main(["status", str(results / "t")]) == 0
    assert "running now" not in capsys.readouterr().out
    try_lock(results / "t").close()


def test_the_lock_names_its_holder_and_ends_with_it(tmp_path):
    held = try_lock(tmp_path)
    with pytest.raises(Held, match=r"pid \d+ on .+ running since"):
        try_lock(tmp_path)
    held.close()  # as the process's end would
    try_lock(tmp_path).close()


def test_a_relative_data_path_is_kept_absolute_in_the_sweep(tmp_path, monkeypatch):
    """The input: `data.path: data` and `resume` started from another folder,
    which could not find the images the sweep was started with."""
    import yaml
    from PIL import Image

    from search.outputs.lock import release
    from search.sweep import prepare_sweep

    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "data" / label / f"{i}.png")
    space = tmp_path / "rel.yaml"
    space.write_text(FAST.replace("source: digits", "path: data"))
    monkeypatch.chdir(tmp_path)
    _, folder = prepare_sweep(Path("rel.yaml"), Path("results"), {})
    release(folder)
    for name in ("space.yaml", "space.original.yaml"):
        saved = yaml.safe_load((folder / name).read_text())
        assert saved["data"]["path"] == str(tmp_path / "data"), name
