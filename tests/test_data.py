"""Data: the split is stratified, reproducible, and bad folders are reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainables.data import decode_split, make_split
from trainables.errors import UserError


def draw_folder(root: Path, classes: dict[str, int], size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_digits_split_is_stratified_and_reproducible():
    kwargs = {"val_fraction": 0.2, "test_fraction": 0.1, "seed": 3}
    first = make_split(None, "digits", **kwargs)
    second = make_split(None, "digits", **kwargs)
    assert first.equals(second)
    shares = first.groupby("split")["label"].value_counts(normalize=True).unstack(0)
    # every class has about the same share in every split
    assert (shares.max(axis=1) - shares.min(axis=1)).max() < 0.02
    assert abs((first["split"] == "val").mean() - 0.2) < 0.01
    other_seed = make_split(None, "digits", val_fraction=0.2, test_fraction=0.1, seed=4)
    assert not first["split"].equals(other_seed["split"])


def test_image_folder_split_and_decode(tmp_path):
    root = draw_folder(tmp_path / "data", {"cat": 20, "dog": 10})
    (root / "cat" / ".hidden.png").write_bytes(b"x")
    (root / "cat" / "notes.txt").write_text("not an image")
    frame = make_split(str(root), None, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert len(frame) == 30
    counts = frame.groupby(["split", "label"]).size()
    assert counts["val"]["cat"] == 4 and counts["val"]["dog"] == 2
    classes, sets = decode_split(frame, str(root), 16)
    assert classes == ["cat", "dog"]
    assert sets["train"].images.shape == (18, 3, 16, 16)
    assert sets["train"].images.dtype.is_floating_point is False


def test_presplit_folders_are_used(tmp_path):
    draw_folder(tmp_path / "d" / "train", {"a": 10, "b": 10})
    draw_folder(tmp_path / "d" / "val", {"a": 2, "b": 2})
    frame = make_split(str(tmp_path / "d"), None, val_fraction=0.3, test_fraction=0.2, seed=0)
    assert (frame["split"] == "val").sum() == 4
    assert frame[frame["split"] == "val"]["path"].str.startswith("val/").all()
    assert (frame["split"] == "test").sum() == 4  # 0.2 of train, no test/ folder


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ({}, "does not exist"),
        ({"empty_root": True}, "no class folders"),
        ({"a": 5, "b": 0}, "holds no images"),
        ({"a": 5, "b": 2}, "fewer than 3 images"),
    ],
)
def test_bad_folders(tmp_path, layout, words):
    root = tmp_path / "data"
    if layout:
        root.mkdir()
    for name, count in layout.items():
        if name == "empty_root":
            continue
        (root / name).mkdir()
        draw_folder(root, {name: count})
    with pytest.raises(UserError) as info:
        make_split(str(root), None, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert words in str(info.value)
    assert str(root) in str(info.value)


def test_class_sets_must_match_between_splits(tmp_path):
    draw_folder(tmp_path / "d" / "train", {"a": 5, "b": 5})
    draw_folder(tmp_path / "d" / "val", {"a": 2})
    with pytest.raises(UserError, match="differ from train"):
        make_split(str(tmp_path / "d"), None, val_fraction=0.2, test_fraction=0, seed=0)


def test_unreadable_image_names_the_file(tmp_path):
    root = draw_folder(tmp_path / "d", {"a": 4, "b": 4})
    (root / "a" / "0.png").write_bytes(b"not a png")
    frame = make_split(str(root), None, val_fraction=0.25, test_fraction=0, seed=0)
    with pytest.raises(UserError, match="0.png"):
        decode_split(frame, str(root), 16)
