"""Every command's --help has an example; bash and zsh complete commands, flags
and their values from scripts written from the parser."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from search.cli import build_parser as _parser
from search.cli.completion import _commands, script

HERE = Path(__file__).resolve().parent


def test_every_command_help_has_an_example():
    commands = _commands(_parser())
    assert {"run", "resume", "status", "validate", "tensorboard", "completion"} <= set(commands)
    for name, parser in commands.items():
        assert isinstance(parser, argparse.ArgumentParser)
        assert "Example" in parser.format_help(), f"ftsweep {name} --help has no example"


def bash_complete(tmp_path: Path, *words: str) -> list[str]:
    (tmp_path / "ftsweep.bash").write_text(script(_parser(), "bash"))
    probe = (
        f"source {tmp_path / 'ftsweep.bash'}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        '_ftsweep; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    return done.stdout.split()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("ftsweep", "st"), ["status"]),
        (("ftsweep", "leaderboard", "r", "--fo"), ["--format"]),
        (("ftsweep", "leaderboard", "r", "--format", ""), ["table", "csv", "markdown", "json"]),
        (("ftsweep", "weights", ""), ["fetch"]),
        (("ftsweep", "weights", "fetch", "--h"), ["--help"]),
        (("ftsweep", "completion", ""), ["bash", "zsh"]),
        (("ftsweep", "run", "--num-samples", ""), []),  # a number: nothing to offer
        (("ftsweep", "resume", "--ml"), ["--mlflow"]),
    ],
)
def test_bash_completion(tmp_path, words, expected):
    assert bash_complete(tmp_path, *words) == expected


def test_bash_completes_file_names_for_paths(tmp_path):
    (tmp_path / "space.yaml").write_text("")
    assert bash_complete(tmp_path, "ftsweep", "validate", "spa") == ["space.yaml"]
    assert bash_complete(tmp_path, "ftsweep", "run", "--results", "spa") == ["space.yaml"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
@pytest.mark.parametrize(
    ("words", "shown"),
    [
        ("ftsweep st", r"ftsweep status"),
        ("ftsweep run --num", r"ftsweep run --num-samples"),
        ("ftsweep weights ", r"ftsweep weights fetch"),
        ("ftsweep leaderboard x --format ", r"csv\s+json\s+markdown\s+table"),
        ("ftsweep completion ", r"bash\s+zsh"),
    ],
)
def test_zsh_completion(tmp_path, words, shown):
    """An interactive zsh (in a pseudo-terminal, zsh's zpty) given the words and a Tab."""
    (tmp_path / "_ftsweep").write_text(script(_parser(), "zsh"))
    done = subprocess.run(
        ["zsh", "-f", str(HERE / "zsh_complete.zsh"), str(tmp_path / "_ftsweep"), words],
        capture_output=True,
        text=True,
        timeout=60,
        env={"ZDUMP": str(tmp_path / ".zcompdump"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    screen = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", done.stdout).replace("\r", "")
    assert re.search(shown, screen), screen[-2000:]
