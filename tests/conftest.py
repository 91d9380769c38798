from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_space(tmp_path: Path):
    """Writes a space file from dedented YAML text and returns its path."""

    def write(text: str, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


MINIMAL = """
name: t
data: {source: digits, image_size: 16}
trial: {max_epochs: 2, batch_size: 32}
space:
  backbone: resnet18
  weights: none
"""
