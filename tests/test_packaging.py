"""ftsweep installs and runs as a wheel, the way a user installs it.

The accident: built as a wheel and installed (not editable), `ftsweep run`
failed with `.../site-packages/spaces/quickstart.yaml: file not found`, and
the wheel held none of search/'s subpackages. The wheel is built here,
installed into a folder of its own (reusing this environment's
dependencies) and imported from a folder outside the repository; the
packaged quickstart (what `ftsweep run` runs with no file) validates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from search.cli import main
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_the_wheel_runs_the_packaged_quickstart_from_any_folder(tmp_path, capsys):
    # A copy of what the build reads: setuptools writes build/ beside it.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("search", "trainables"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("ftsweep-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"search/spaces/quickstart.yaml", "search/engine/tuner.py", "trainables/models.py"} <= (
        names
    )
    assert not any(n.startswith("tests/") for n in names)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--target", str(site), str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the repository's editable install
    where = subprocess.run(  # the lazy package alone: no torch, no Ray
        [sys.executable, "-c", "import search; print(search.__file__)"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=300,
    )  # fmt: skip
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    space = site / "search" / "spaces" / "quickstart.yaml"  # what `ftsweep run` runs
    # The packaged example, checked as `ftsweep validate` checks it (in this
    # process: the installed package's import was shown above).
    assert main(["validate", str(space), "--no-timing"]) == 0, capsys.readouterr().err[-3000:]
    assert "quickstart" in capsys.readouterr().out
