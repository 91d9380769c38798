"""`ftsweep init`: a starter space for an ImageFolder that validates as written."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from search.cli import main
from search.preflight.init import starter_space
from search.space.loader import load_space


def _folder(root: Path, classes: int, per_class: int, size: tuple[int, int]) -> Path:
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, (c * 60, i * 10, 0)).save(folder / f"{i}.png")
    return root


def test_init_writes_a_space_that_validates(tmp_path, capsys):
    data = _folder(tmp_path / "My Flowers", classes=3, per_class=12, size=(150, 120))
    out = tmp_path / "spaces" / "flowers.yaml"
    assert main(["init", str(data), "--out", str(out)]) == 0
    assert f"ftsweep validate {out}" in capsys.readouterr().out
    text = out.read_text()
    assert "36 images in 3 classes" in text and "A small data set" in text
    space = load_space(out)
    assert space.name == "my-flowers"
    assert Path(space.data.path) == data.resolve()
    assert space.data.image_size == 96  # the largest size a 120 px short side fills
    assert space.search.scheduler.type == "asha"
    assert space.resources.gpus == (0.5 if torch.cuda.is_available() else 0)
    # validate reads it without errors (weights missing from the cache are warnings).
    assert main(["validate", str(out), "--no-timing"]) == 0
    assert f"{out}: OK" in capsys.readouterr().out
    # Never over an existing file.
    assert main(["init", str(data), "--out", str(out)]) == 2
    assert "the file exists" in capsys.readouterr().err


def test_init_says_which_folders_it_uses(tmp_path):
    data = tmp_path / "d"
    for part in ("train", "val"):
        _folder(data / part, classes=2, per_class=6, size=(40, 30))
    text = starter_space(data, name="d")
    assert "unused: the data has a val/ folder" in text
    assert "never used to choose" in text  # no test/ folder: test_fraction applies
    assert "image_size: 64 " in text  # the smallest size for small images


def test_init_on_a_missing_folder_exits_2(tmp_path, capsys):
    assert main(["init", str(tmp_path / "none"), "--out", str(tmp_path / "s.yaml")]) == 2
    assert "data folder does not exist" in capsys.readouterr().err
    assert not (tmp_path / "s.yaml").exists()
