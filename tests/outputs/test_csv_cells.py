"""Class names written into a CSV cannot run as spreadsheet formulas.

The input: class folders named like `=1+1`, `@SUM(1)`, `+CALC()` or `-2+3`
(a formula injection: `=cmd|' /C calc'!A0` runs a program in Excel) went
verbatim into `predict --out`, per_class.csv, predictions.csv and
confusion_matrix.csv. Each such cell now starts with a quote, and numbers
are left as they are.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
from PIL import Image

from search.cli import main
from search.outputs.text import spreadsheet_safe
from tests.conftest import model_folder

CLASSES = ["=1+1", "@SUM(1)", "+CALC()", "-2+3"]


def _cells(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return [cell for row in csv.reader(f) for cell in row]


def test_no_cell_of_evaluate_or_predict_starts_a_formula(tmp_path, capsys):
    model = model_folder(tmp_path / "model", CLASSES)
    data = tmp_path / "data"
    for i, name in enumerate(CLASSES):
        (data / name).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (16, 16), (60 * i, 10 * j, 0)).save(data / name / f"{j}.png")
    out = tmp_path / "evaluation"
    assert main(["evaluate", str(model), str(data), "--out", str(out)]) == 0, capsys.readouterr()
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(model), str(data), "--out", str(predictions), "--top-k", "4"]) == 0
    files = [*out.glob("*.csv"), predictions]
    assert {f.name for f in files} >= {"per_class.csv", "predictions.csv", "confusion_matrix.csv"}
    for path in files:
        cells = _cells(path)
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")], path.name
        assert not [c for c in cells if c.startswith("-2+3")], path.name
        assert any(c == "'=1+1" for c in cells), path.name  # the name is kept, quoted


def test_numbers_and_plain_text_are_left_alone():
    frame = pd.DataFrame(
        {"=x": ["-1", "ok", "@a"], "value": [-0.5, 1.0, 2.0]}, index=["+r", "s", "t"]
    )
    safe = spreadsheet_safe(frame)
    assert list(safe.columns) == ["'=x", "value"] and list(safe.index) == ["'+r", "s", "t"]
    assert list(safe["'=x"]) == ["'-1", "ok", "'@a"]
    assert list(safe["value"]) == [-0.5, 1.0, 2.0]
    assert list(frame["=x"]) == ["-1", "ok", "@a"]  # a copy: the caller's frame is untouched


def test_predict_writes_the_good_images_beside_one_too_large_to_open(tmp_path, monkeypatch, capsys):
    """The input: a folder with one 15000x15000 image (Pillow's decompression-bomb
    guard) stopped predict with a traceback and no CSV for the good images."""
    from PIL import Image as PILImage

    model = model_folder(tmp_path / "model", ["a", "b"])
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("ok1", "ok2"):
        PILImage.new("RGB", (20, 20), "red").save(photos / f"{name}.png")
    PILImage.new("RGB", (120, 120), "blue").save(photos / "huge.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 120 x 120 is over twice that
    out = tmp_path / "predictions.csv"
    code = main(["predict", str(model), str(photos), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err  # 2: one file has no prediction
    assert "1 of 3 files could not be read" in err
    rows = pd.read_csv(out).set_index("path")
    assert rows["error"].isna().sum() == 2
    assert "decompression bomb" in rows.loc[str(photos / "huge.png"), "error"]
