"""Odd files in a user's data: each the input that went wrong on main before.

- `ln -s .. data/b/a/up` turned 12 images into 5,412 rows, 4,920 mislabelled,
  every real file in more than one split (the scan followed every link);
- a FIFO named `pipe.png` made `validate` and `run` wait forever;
- an unreadable subfolder was skipped without a word;
- a 16-bit PNG trained as an all-white image; a phone photo's EXIF
  orientation was ignored (it trained sideways).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from trainables import scan
from trainables.data import build_split, load_image, to_rgb
from trainables.errors import UserError


def _images(folder, count: int, value: int = 128) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (8, 8), (value + i, 0, 0)).save(folder / f"{i}.png")


def _split(root, **options):
    options = {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0, "bad_files": "skip"} | options
    return build_split(str(root), None, **options)


def test_a_link_loop_is_scanned_once_and_named(tmp_path):
    _images(tmp_path / "a", 6)
    _images(tmp_path / "b", 6)
    (tmp_path / "b" / "a").mkdir()
    (tmp_path / "b" / "a" / "up").symlink_to("..")  # the loop: b/a/up -> b
    split = _split(tmp_path)
    frame = split.frame
    assert len(frame) == 12 and frame["path"].is_unique
    assert (frame["path"].str.split("/").str[0] == frame["label"]).all()  # none mislabelled
    assert [(p.path, p.kind) for p in split.problems if p.kind == "link"] == [("b/a/up", "link")]


def test_one_file_in_two_classes_is_left_out_of_both_and_links_outside_are_not_followed(
    tmp_path,
):
    root = tmp_path / "data"
    _images(root / "a", 6)
    _images(root / "b", 6)
    (root / "a" / "also-b0.png").symlink_to(root / "b" / "0.png")  # which class is it?
    _images(tmp_path / "elsewhere", 3)
    (root / "b" / "more").symlink_to(tmp_path / "elsewhere")  # leaves the data folder
    split = _split(root)
    assert sorted(split.frame["path"]) == sorted(
        [f"a/{i}.png" for i in range(6)] + [f"b/{i}.png" for i in range(1, 6)]
    )
    links = {p.path: p.detail for p in split.problems if p.kind == "link"}
    assert set(links) == {"a/also-b0.png", "b/0.png", "b/more"}
    assert "classes ['a', 'b']" in links["b/0.png"] and "out of the data folder" in links["b/more"]


def test_a_file_linked_into_another_split_is_taken_once(tmp_path):
    for split in ("train", "val"):
        _images(tmp_path / split / "a", 6)
        _images(tmp_path / split / "b", 6)
    (tmp_path / "val" / "a" / "leak.png").symlink_to(tmp_path / "train" / "a" / "0.png")
    split = _split(tmp_path)
    assert "val/a/leak.png" not in set(split.frame["path"])
    assert any(p.path == "val/a/leak.png" and p.kind == "link" for p in split.problems)


def test_a_fifo_is_named_not_opened(tmp_path):
    _images(tmp_path / "a", 6)
    _images(tmp_path / "b", 6)
    os.mkfifo(tmp_path / "a" / "pipe.png")  # opening it would wait for a writer forever
    split = _split(tmp_path)
    assert len(split.frame) == 12
    assert [(p.path, p.kind) for p in split.problems] == [("a/pipe.png", "not_a_file")]
    with pytest.raises(UserError, match="pipes, sockets or devices"):
        _split(tmp_path, bad_files="fail")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_folder_is_named(tmp_path):
    _images(tmp_path / "a", 6)
    _images(tmp_path / "b", 6)
    _images(tmp_path / "b" / "locked", 2)
    (tmp_path / "b" / "locked").chmod(0)
    try:
        split = _split(tmp_path)
    finally:
        (tmp_path / "b" / "locked").chmod(0o755)
    assert [(p.path, p.kind) for p in split.problems] == [("b/locked", "unreadable_folder")]


def test_an_unreadable_folder_is_named_even_as_root(tmp_path, monkeypatch):
    _images(tmp_path / "a", 6)
    _images(tmp_path / "b", 6)
    _images(tmp_path / "b" / "locked", 2)
    real = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(scan.os, "scandir", scandir)
    split = _split(tmp_path)
    assert [(p.path, p.kind) for p in split.problems] == [("b/locked", "unreadable_folder")]
    assert len(split.frame) == 12


def test_a_file_that_never_answers_is_left_out_in_time(tmp_path, monkeypatch):
    _images(tmp_path / "a", 6)
    _images(tmp_path / "b", 6)
    real = scan._decode_error

    def stalls(path):
        if path.name == "3.png" and path.parent.name == "a":
            import time

            time.sleep(3)  # a stalled network mount
        return real(path)

    monkeypatch.setattr(scan, "_decode_error", stalls)
    monkeypatch.setattr(scan, "FILE_TIMEOUT_S", 0.5)
    split = _split(tmp_path)
    assert [(p.path, p.detail) for p in split.problems] == [("a/3.png", "not read within 0.5 s")]


def test_sixteen_bit_grey_keeps_its_levels(tmp_path):
    levels = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(levels).save(tmp_path / "deep.png")  # a 16-bit greyscale PNG
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I")
    tensor = load_image(tmp_path / "deep.png", 8)
    assert tensor.dtype == torch.uint8
    expected = np.rint(levels / 257.0)
    assert np.abs(tensor[0].numpy().astype(float) - expected).max() <= 1  # not all 255
    assert tensor.float().std() > 50


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (40, 20), (0, 0, 255))  # landscape as stored...
    stored.paste((255, 0, 0), (0, 0, 20, 20))  # ...red on its left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": a phone held upright
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "phone.jpg") as image:
        upright = to_rgb(image)
    assert upright.size == (20, 40)  # portrait, as taken
    top, bottom = upright.getpixel((10, 5)), upright.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the red half is on top
    assert bottom[2] > 200 and bottom[0] < 60
