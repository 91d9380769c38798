"""model.json fields a user edited or damaged are named, never a traceback.

The inputs: a bad format_version, head, dropout, hidden size or image size
made load_model, evaluate and predict fail inside torch or torchvision.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from search.cli import main
from search.model.export import load_model
from tests.conftest import model_folder
from trainables.errors import UserError


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("format_version", "one", "format_version must be a whole number"),
        ("format_version", 0, "format_version must be a whole number"),
        ("format_version", 99, "newer than this ftsweep reads"),
        ("head", {"hidden": -4, "dropout": 0.1}, "head.hidden must be a whole number"),
        ("head", {"hidden": 0, "dropout": 1.5}, "head.dropout must be a number"),
        ("head", {"hidden": 0, "dropout": "NaN"}, "head.dropout must be a number"),
        ("head", [0, 0.1], "head must be an object"),
        ("image_size", 100000, "image_size must be a whole number from 8 to 1024"),
        ("image_size", "224", "image_size must be a whole number"),
        ("backbone", "resnet_9000", "'resnet_9000' is not a backbone"),
        ("classes", ["a", "a", "b"], "classes must be a list of distinct class names"),
        (
            "model",
            {"backbone": "resnet18", "head_hidden": 1.5},
            "head_hidden must be a whole number",
        ),
        ("model", {"backbone": "resnet18", "nonsense": 1}, "not a model hyperparameter"),
    ],
)
def test_each_bad_field_is_named(tmp_path, capsys, field, value, words):
    folder = model_folder(tmp_path / "model", ["a", "b", "c"])
    description = json.loads((folder / "model.json").read_text())
    description[field] = value
    (folder / "model.json").write_text(json.dumps(description))
    with pytest.raises(UserError, match=words):
        load_model(folder)
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20), "red").save(image)
    assert main(["predict", str(folder), str(image)]) == 2
    err = capsys.readouterr().err
    assert words.split()[0] in err and "Traceback" not in err
