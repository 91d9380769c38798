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
        ({"a": 5, "b": 0}, "at least 2 classes with readable images"),
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


def test_image_spoiled_after_the_scan_names_the_file(tmp_path):
    root = draw_folder(tmp_path / "d", {"a": 4, "b": 4})
    frame = make_split(str(root), None, val_fraction=0.25, test_fraction=0, seed=0)
    (root / "a" / "0.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="0.png"):
        decode_split(frame, str(root), 16)


def _spoil(root: Path) -> None:
    """Every kind of bad entry the scan must find, beside good images."""
    png = (root / "a" / "0.png").read_bytes()
    (root / "a" / "0.png").write_bytes(png[: len(png) // 2])  # truncated
    pixels = np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "b" / "photo.jpg", quality=90)
    jpeg = (root / "b" / "photo.jpg").read_bytes()
    (root / "b" / "photo.jpg").write_bytes(jpeg[: len(jpeg) - 200])  # truncated JPEG
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "a" / "notes.txt").write_text("labelled by Bob")
    (root / "b" / ".DS_Store").write_bytes(b"\0")
    (root / "b" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(pixels).save(root / "b" / ".ipynb_checkpoints" / "x.png")
    (root / ".cache").mkdir()
    (root / "README.md").write_text("flowers")
    (root / "c").mkdir()
    (root / "c" / "broken.png").write_bytes(b"\x89PNG garbage")


def test_scan_skips_bad_files_with_a_warning(tmp_path, caplog):
    from trainables.data import build_split

    root = draw_folder(tmp_path / "d", {"a": 8, "b": 8})
    _spoil(root)
    with caplog.at_level("WARNING"):
        split = build_split(str(root), None, val_fraction=0.25, test_fraction=0, seed=0)
    frame = split.frame
    assert set(frame["label"]) == {"a", "b"}  # c had no readable image
    assert len(frame) == 7 + 8  # a/0.png gone; b/photo.jpg gone
    kinds = {(p.path, p.kind) for p in split.problems}
    assert kinds == {
        ("a/0.png", "unreadable"),
        ("a/empty.png", "unreadable"),
        ("b/photo.jpg", "unreadable"),
        ("c/broken.png", "unreadable"),
        ("c", "empty_class"),
        ("a/notes.txt", "not_an_image"),
        ("README.md", "not_an_image"),
        ("b/.DS_Store", "hidden"),
        ("b/.ipynb_checkpoints", "hidden"),
        (".cache", "hidden"),
    }
    truncated = next(p for p in split.problems if p.path == "b/photo.jpg")
    assert "truncated" in truncated.detail
    warning = caplog.text
    assert "4 images that cannot be decoded (a/0.png, a/empty.png, b/photo.jpg" in warning
    assert "1 class folders without a readable image (c)" in warning
    assert ".DS_Store" not in warning  # hidden entries are ignored, not warned about


def test_scan_fails_before_training_when_asked(tmp_path):
    root = draw_folder(tmp_path / "d", {"a": 8, "b": 8})
    _spoil(root)
    with pytest.raises(UserError) as info:
        make_split(str(root), None, val_fraction=0.25, test_fraction=0, seed=0, bad_files="fail")
    message = str(info.value)
    assert str(root) in message and "data.bad_files: skip" in message
    assert "2 files that are not images (README.md, a/notes.txt)" in message


def test_scan_class_counts_after_skipping(tmp_path):
    # Too few readable images in a class to split it: the counts are named.
    root = draw_folder(tmp_path / "d", {"a": 8, "b": 3})
    (root / "b" / "0.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"fewer than 3 images.*'b': 2"):
        make_split(str(root), None, val_fraction=0.25, test_fraction=0, seed=0)
    # A val/ class whose only image is unreadable: the class sets differ.
    draw_folder(tmp_path / "p" / "train", {"a": 5, "b": 5})
    draw_folder(tmp_path / "p" / "val", {"a": 2, "b": 1})
    (tmp_path / "p" / "val" / "b" / "0.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"classes of val/ differ.*missing \['b'\].*'a': 2"):
        make_split(str(tmp_path / "p"), None, val_fraction=0.2, test_fraction=0, seed=0)


def test_sweep_folder_lists_what_the_scan_left_out(tmp_path, write_space):
    import pandas as pd

    from search.sweep import prepare_sweep
    from trainables.scan import SCAN_FILE

    root = draw_folder(tmp_path / "d", {"a": 8, "b": 8})
    _spoil(root)
    space = write_space(f"""
        name: s
        data: {{path: {root}, image_size: 16, test_fraction: 0}}
        space: {{backbone: resnet18, weights: none}}
        """)
    _, sweep_dir = prepare_sweep(space, tmp_path / "results", {})
    listed = pd.read_csv(sweep_dir / SCAN_FILE)
    assert list(listed.columns) == ["path", "problem", "detail"]
    assert "a/0.png" in set(listed["path"])
    split = pd.read_csv(sweep_dir / "split.csv")
    assert not set(listed["path"]) & set(split["path"])


def test_validate_exits_2_on_bad_files_when_the_policy_is_fail(tmp_path, write_space, capsys):
    from search.cli import main

    root = draw_folder(tmp_path / "d", {"a": 8, "b": 8})
    (root / "a" / "3.png").write_bytes(b"garbage")
    space = write_space(f"""
        name: s
        data: {{path: {root}, image_size: 16, bad_files: fail}}
        space: {{backbone: resnet18, weights: none}}
        """)
    assert main(["validate", str(space)]) == 2
    err = capsys.readouterr().err
    assert "1 images that cannot be decoded (a/3.png)" in err and "Traceback" not in err
    space.write_text(space.read_text().replace("bad_files: fail", "bad_files: skip"))
    assert main(["validate", str(space), "--no-timing"]) == 0
    assert "data scan left out: 1 images that cannot be decoded" in capsys.readouterr().out
