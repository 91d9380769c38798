"""Manifests: a CSV or Parquet file of path,label[,split][,group] rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trainables.data import build_split, decode_split
from trainables.errors import UserError

SPLIT = {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 3}


def draw(folder: Path, names: list[str], size: int = 12) -> None:
    rng = np.random.default_rng(len(names))
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / name)


def manifest(tmp_path: Path, rows: list[dict], name: str = "labels.csv") -> Path:
    """Draws each row's image where its path says (relative to tmp_path/data)."""
    data = tmp_path / "data"
    for row in rows:
        path = Path(row["path"])
        if not path.is_absolute():
            path = data / path
        if not path.exists() and row.get("draw", True):
            draw(path.parent, [path.name])
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "draw"} for r in rows])
    file = data / name
    file.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".parquet"):
        frame.to_parquet(file)
    else:
        frame.to_csv(file, index=False)
    return file


def rows_of(counts: dict[str, int], groups_per_class: int = 0) -> list[dict]:
    rows = []
    for label, n in counts.items():
        for i in range(n):
            row = {"path": f"img/{label}/{i}.png", "label": label}
            if groups_per_class:
                row["group"] = f"{label}-g{i % groups_per_class}"
            rows.append(row)
    return rows


def test_relative_and_absolute_paths_stratified_within_one_image(tmp_path):
    rows = rows_of({"cat": 37, "dog": 23, "owl": 15})
    outside = tmp_path / "elsewhere"
    for i in range(5):  # absolute paths, outside the manifest's folder
        rows.append({"path": str(outside / f"owl{i}.png"), "label": "owl"})
    file = manifest(tmp_path, rows)
    frame = build_split(None, None, manifest=str(file), **SPLIT).frame
    assert len(frame) == len(rows) and frame["path"].is_unique
    assert sorted(frame["path"]) == sorted(r["path"] for r in rows)
    for label, n in frame["label"].value_counts().items():
        test = ((frame["label"] == label) & (frame["split"] == "test")).sum()
        val = ((frame["label"] == label) & (frame["split"] == "val")).sum()
        assert abs(test - n * 0.2) <= 1 and abs(val - n * 0.2) <= 1, (label, n, test, val)
    classes, sets = decode_split(frame, str(file.parent), 16)  # both kinds of path decode
    assert classes == ["cat", "dog", "owl"] and sum(len(s) for s in sets.values()) == len(rows)
    again = build_split(None, None, manifest=str(file), **SPLIT).frame
    assert again.equals(frame)  # seeded


def test_groups_never_straddle_splits_and_every_split_has_every_class(tmp_path):
    file = manifest(tmp_path, rows_of({"a": 40, "b": 30, "c": 30}, groups_per_class=10))
    frame = build_split(None, None, manifest=str(file), **SPLIT).frame
    assert (frame.groupby("group")["split"].nunique() == 1).all()
    for split in ("train", "val", "test"):
        assert set(frame.loc[frame["split"] == split, "label"]) == {"a", "b", "c"}
    share = frame["split"].value_counts(normalize=True)
    assert 0.1 <= share["test"] <= 0.3 and 0.1 <= share["val"] <= 0.3
    assert "group" in frame  # kept in split.csv: the user can check it


def test_a_split_column_is_taken_as_given_and_val_test_are_split_off_train_otherwise(tmp_path):
    rows = rows_of({"a": 20, "b": 20})
    for i, row in enumerate(rows):
        row["split"] = "test" if i % 5 == 0 else "train"
    file = manifest(tmp_path, rows, "given.csv")
    frame = build_split(None, None, manifest=str(file), **SPLIT).frame
    given = {r["path"]: r["split"] for r in rows}
    assert (frame.loc[frame["split"] == "test", "path"].map(given) == "test").all()
    assert (frame["split"] == "test").sum() == 8  # the given test rows, no more
    assert (frame["split"] == "val").sum() > 0  # split off the train rows


def test_parquet(tmp_path):
    file = manifest(tmp_path, rows_of({"a": 6, "b": 6}), "labels.parquet")
    frame = build_split(None, None, manifest=str(file), **SPLIT).frame
    assert len(frame) == 12


def _error(tmp_path: Path, rows: list[dict], name: str = "labels.csv") -> str:
    file = manifest(tmp_path, rows, name)
    with pytest.raises(UserError) as info:
        build_split(None, None, manifest=str(file), **SPLIT)
    text = str(info.value)
    assert str(file) in text  # every message names the manifest
    return text


def test_errors_name_the_row_and_the_column(tmp_path):
    good = rows_of({"a": 6, "b": 6})
    missing = [*good[:3], {"path": "img/nope.png", "label": "a", "draw": False}, *good[3:]]
    assert "row 5, column path ('img/nope.png'): does not exist" in _error(tmp_path, missing)
    empty = [*good[:7], {"path": "img/x.png", "label": ""}, *good[7:]]
    assert "row 9, column label: is empty" in _error(tmp_path / "e", empty)
    split = [dict(r, split="train") for r in good]
    split[2]["split"] = "validation"
    text = _error(tmp_path / "s", split)
    assert "row 4, column split: is not one of train, val, test" in text and "validation" in text
    twice = [*good, dict(good[0], label="b")]
    assert "row 14, column path: 'img/a/0.png' is the same file as row 2" in _error(
        tmp_path / "t", twice
    )
    assert "no column 'label'" in _error(tmp_path / "c", [{"path": "img/a/0.png", "class": "a"}])
    small = rows_of({"a": 6, "b": 2})
    assert "fewer than 3 images" in _error(tmp_path / "f", small) and "'b': 2" in _error(
        tmp_path / "f2", small
    )


def test_a_group_in_two_splits_of_the_split_column_is_refused(tmp_path):
    rows = rows_of({"a": 6, "b": 6}, groups_per_class=2)
    for row in rows:
        row["split"] = "train"
    rows[0]["split"] = "test"  # a-g0 is in train too (row 4)
    text = _error(tmp_path, rows)
    assert "group 'a-g0' is in more than one split" in text and "row 2 in test" in text


def test_unreadable_images_follow_bad_files(tmp_path):
    rows = rows_of({"a": 6, "b": 6})
    file = manifest(tmp_path, rows)
    (file.parent / rows[0]["path"]).write_bytes(b"not an image")
    split = build_split(None, None, manifest=str(file), **SPLIT)
    assert len(split.frame) == 11
    assert [(p.path, p.kind) for p in split.problems] == [(rows[0]["path"], "unreadable")]
    with pytest.raises(UserError, match="1 images that cannot be decoded"):
        build_split(None, None, manifest=str(file), bad_files="fail", **SPLIT)


def test_not_a_manifest(tmp_path):
    (tmp_path / "labels.json").write_text("{}")
    with pytest.raises(UserError, match="is neither"):
        build_split(None, None, manifest=str(tmp_path / "labels.json"), **SPLIT)
    with pytest.raises(UserError, match="does not exist"):
        build_split(None, None, manifest=str(tmp_path / "none.csv"), **SPLIT)
    (tmp_path / "latin.csv").write_bytes(b"path,label\n\xe9t\xe9.png,a\n")
    with pytest.raises(UserError, match="cannot read the manifest"):
        build_split(None, None, manifest=str(tmp_path / "latin.csv"), **SPLIT)


def test_validate_and_run_exit_2_naming_the_row(tmp_path, capsys):
    from search.cli import main

    rows = rows_of({"a": 6, "b": 6})
    rows.insert(4, {"path": "img/gone.png", "label": "a", "draw": False})
    file = manifest(tmp_path, rows)
    space = tmp_path / "s.yaml"
    space.write_text(f"data: {{manifest: {file}}}\nspace: {{backbone: resnet18}}\n")
    for command in (
        ["validate", str(space), "--no-timing"],
        ["run", str(space), "--results", str(tmp_path / "r")],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{file}: row 6, column path ('img/gone.png'): does not exist" in err, err
        assert "Traceback" not in err
