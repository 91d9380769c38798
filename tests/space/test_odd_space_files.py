"""Odd space files get one paragraph (exit 2), never a traceback, a hang or a
gigabyte: each case is an input that went wrong on main before (issue 18)."""

from __future__ import annotations

import time

import pytest

from search.cli import main
from search.space import load_space
from trainables.errors import UserError

GOOD = "name: odd\ndata: {source: digits, image_size: 16}\nspace:\n  backbone: resnet18\n"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (GOOD.encode().replace(b"odd", b"odd\xff"), "byte 0xff at offset 9"),
        ("name: café\n".encode("latin-1") + GOOD.encode()[10:], "not UTF-8"),
        (GOOD.encode("utf-16"), "not UTF-8"),
        (GOOD.encode().replace(b"odd", b"o\x00dd"), "NUL byte at offset 7"),
        (GOOD.encode().replace(b"odd", b"o\x07dd"), "not a YAML text file"),
    ],
    ids=["0xff", "latin-1", "utf-16", "nul", "control"],
)
def test_a_file_that_is_not_utf8_text_is_named_with_its_offset(tmp_path, capsys, data, words):
    path = tmp_path / "space.yaml"
    path.write_bytes(data)
    with pytest.raises(UserError, match=words):
        load_space(path)
    assert main(["validate", str(path), "--no-timing"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_a_utf8_file_with_a_bom_is_read(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_space(path).name == "odd"


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("  lr: {loguniform: [1.0e-4, .nan]}", "space.lr.loguniform[1]"),
        ("  lr: {uniform: [1.0e-4, .inf]}", "space.lr.uniform[1]"),
        ("  lr: .nan", "space.lr"),
        ("  weight_decay: -.inf", "space.weight_decay"),
    ],
)
def test_infinite_and_nan_numbers_are_refused_before_anything_runs(write_space, line, key):
    with pytest.raises(UserError) as info:
        load_space(write_space(GOOD + line + "\n"))
    assert f"({key})" in str(info.value) and "must be a finite number" in str(info.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (GOOD.replace("image_size: 16", "image_size: 100000"), "between 8 and 1024"),
        (GOOD.replace("image_size: 16", "image_size: 16, seed: -1"), "data.seed must be between 0"),
        (GOOD.replace("image_size: 16", "image_size: 16, cache_budget: .inf"), "finite"),
        (GOOD + "search: {seed: -1}\n", "search.seed must be between 0 and 4294967295"),
        (GOOD + "search: {time_budget: 1.0e-300}\n", "time_budget must be between 1"),
        (GOOD + "resources: {gpus: 2}\n", "several GPUs per trial are not supported"),
    ],
    ids=["image_size", "data.seed", "cache_budget", "search.seed", "time_budget", "gpus"],
)
def test_values_that_cannot_be_met_name_their_limit(write_space, capsys, text, words):
    path = write_space(text)
    with pytest.raises(UserError, match=words):
        load_space(path)
    assert main(["validate", str(path), "--no-timing"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_an_alias_bomb_is_refused_at_once_in_a_paragraph(tmp_path):
    # 446 bytes that expand to 10^9 strings; it once made a 142 MB message.
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nspace: {backbone: resnet18}\n")
    tic = time.perf_counter()
    with pytest.raises(UserError, match="aliases") as info:
        load_space(path)
    assert time.perf_counter() - tic < 5
    assert len(str(info.value)) < 2100


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("space: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
        ("a: &a [1, *a]\nspace: {backbone: resnet18}\n", "contains itself"),
    ],
    ids=["deep", "recursive"],
)
def test_deep_or_self_containing_documents_are_refused(tmp_path, text, words):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=words):
        load_space(path)


def test_a_huge_file_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(GOOD.encode() + b"#" * (2 * 1024**2))
    with pytest.raises(UserError, match="is not a space file"):
        load_space(path)


def test_any_message_stays_a_paragraph():
    error = UserError("bad value " + "x" * 10**6, "f.yaml:1 (" + "k" * 10**4 + ")")
    assert len(error.message) <= 2000 and len(error.location or "") <= 500
    assert "characters left out" in str(error)
