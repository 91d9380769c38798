"""Random inputs, a bounded budget: the space loader and load_model's JSON either
accept an input or raise UserError (exit 2, one paragraph), never anything else.

A seeded generator (reproducible: the failing case is printed with its seed)
mutates valid documents: keys of the right sections and random ones, values
of every YAML type (huge, negative, infinite, NaN, empty, nested), and raw
text edits (cut, duplicated, a random byte). Each property gets a fixed
number of cases, well under 20 s on 2 cores.
"""

from __future__ import annotations

import json
import math
import random
import string
from pathlib import Path
from typing import Any

import pytest
import yaml

from search.model.export import load_model
from search.space import load_space
from tests.conftest import model_folder
from trainables.errors import UserError

SEED = 20261205
SPACE_CASES = 400
MODEL_CASES = 150

SECTIONS = {
    "data": ["source", "path", "image_size", "val_fraction", "test_fraction", "seed",
             "bad_files", "cache_budget", "manifest", "sampler"],
    "trial": ["max_epochs", "batch_size", "metric", "mode", "precision", "max_failures",
              "compile"],
    "search": ["num_samples", "max_concurrent", "time_budget", "sampler", "seed",
               "start_from", "scheduler", "finalists"],
    "resources": ["cpus", "gpus", "reuse_actors"],
    "space": ["backbone", "lr", "weights", "frozen_depth", "head_hidden", "optimizer",
              "augmentation", "lr_scheduler", "label_smoothing", "class_weights"],
}  # fmt: skip
BASE = {
    "name": "fuzz",
    "data": {"source": "digits", "image_size": 16},
    "trial": {"max_epochs": 2, "batch_size": 32},
    "search": {"num_samples": 4, "scheduler": {"type": "asha", "grace_period": 1}},
    "space": {"backbone": "resnet18", "weights": "none", "lr": {"loguniform": [1e-4, 1e-2]}},
}


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 3 else 9)
    if kind == 0:
        return rng.choice([0, 1, -1, 2, 3, 10**6, -(10**12), 2**63, 7])
    if kind == 1:
        return rng.choice([0.0, 0.5, -0.5, 1e-300, 1e300, math.inf, -math.inf, math.nan, 1e-3])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind in (3, 4):
        return rng.choice(
            ["", "none", "resnet18", "asha", "tpe", "auto", "8h", "1e-3", "all", "DEFAULT",
             "squeezenet1_1", "val_accuracy", "fp32", "\u00e9", "x" * 300, "-1", "1GB"]
        )  # fmt: skip
    if kind == 5:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 12)))
    if kind == 6:
        return {
            rng.choice(["loguniform", "uniform", "choice", "int", "x"]): [
                _value(rng, depth + 1) for _ in range(rng.randrange(0, 4))
            ]
        }
    if kind in (7, 8):
        return rng.choice([1, 0.1, "resnet18"])
    if kind == 9:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {
        rng.choice([*SECTIONS["space"], "type", "grace_period", "adamw", "sgd"]): _value(
            rng, depth + 1
        )
        for _ in range(rng.randrange(0, 3))
    }


# Values each key takes, edges included, so that many documents are valid.
PLAUSIBLE: dict[str, list[Any]] = {
    "image_size": [8, 16, 1024], "val_fraction": [0.1, 0.3], "test_fraction": [0.0, 0.2],
    "seed": [0, 4294967295], "bad_files": ["skip", "fail"], "cache_budget": ["auto", "1GB", 0],
    "max_epochs": [1, 3], "batch_size": [1, 256], "metric": ["val_loss", "val_accuracy"],
    "precision": ["fp32", "bf16"], "max_failures": [0, 5], "compile": [True, False],
    "num_samples": [1, 50], "max_concurrent": [1, 8], "time_budget": ["8h", 60, "1h30m"],
    "sampler": ["tpe", "random", "qmc"], "finalists": [0, 3],
    "scheduler": [{"type": "none"}, {"type": "asha", "grace_period": 1}],
    "manifest": ["labels.csv", "/nonexistent.parquet"],
    "class_weights": ["none", "inverse", {"choice": ["none", "sqrt_inverse"]}],
    "cpus": [0.5, 1, 2], "gpus": [0, 0.25], "reuse_actors": [True, False],
    "lr": [1e-3, {"loguniform": [1e-5, 1e-1]}, {"choice": [1e-3, 1e-2]}],
    "frozen_depth": [0, "all", {"int": [0, 2]}], "head_hidden": [0, {"choice": [0, 64]}],
    "augmentation": ["none", "light", {"choice": ["none", "strong"]}],
    "lr_scheduler": ["none", "cosine"], "label_smoothing": [0.0, {"uniform": [0.0, 0.2]}],
    "backbone": ["resnet18", "squeezenet1_1", {"choice": ["resnet18", "mobilenet_v3_small"]}],
    "optimizer": ["adamw", "sgd"], "weights": ["none"],
}  # fmt: skip


def _document(rng: random.Random) -> dict[str, Any]:
    document = json.loads(json.dumps(BASE))
    for _ in range(rng.randrange(1, 4)):
        section = rng.choices([*SECTIONS, "name", "bogus"], weights=[8] * len(SECTIONS) + [1, 1])[0]
        if section in ("name", "bogus") or rng.random() < 0.05:
            document[section] = _value(rng)
            continue
        target = document.setdefault(section, {})
        if not isinstance(target, dict):
            continue
        key = rng.choice([*SECTIONS[section], *SECTIONS[section], "unknown_key"])
        plausible = PLAUSIBLE.get(key)
        target[key] = rng.choice(plausible) if plausible and rng.random() < 0.6 else _value(rng)
    return document


def _text(rng: random.Random, document: dict[str, Any]) -> bytes:
    text = yaml.safe_dump(document, allow_unicode=True).encode()
    edit = rng.randrange(10)
    if edit == 0 and text:  # cut short
        return text[: rng.randrange(len(text))]
    if edit == 1 and text:  # one random byte
        at = rng.randrange(len(text))
        return text[:at] + bytes([rng.randrange(256)]) + text[at + 1 :]
    if edit == 2:  # a line twice
        lines = text.splitlines(keepends=True)
        line = rng.choice(lines)
        return b"".join(lines) + line
    return text


def test_the_space_loader_accepts_or_says_why(tmp_path):
    rng = random.Random(SEED)
    outcomes = {"accepted": 0, "refused": 0}
    for case in range(SPACE_CASES):
        data = _text(rng, _document(rng))
        path = tmp_path / "space.yaml"
        path.write_bytes(data)
        try:
            load_space(path)
            outcomes["accepted"] += 1
        except UserError as error:
            assert "Traceback" not in str(error) and len(str(error)) <= 2600
            outcomes["refused"] += 1
        except Exception as error:  # the property: nothing else
            pytest.fail(f"case {case} (seed {SEED}): {type(error).__name__}: {error}\n{data!r}")
    assert outcomes["accepted"] > 10 and outcomes["refused"] > 10, outcomes  # both kinds met


def test_load_model_accepts_a_model_json_or_says_why(tmp_path):
    rng = random.Random(SEED)
    folder = model_folder(tmp_path / "model", ["a", "b", "c"])
    valid = json.loads((folder / "model.json").read_text())
    fields = ["format_version", "backbone", "classes", "image_size", "head", "model", "x"]
    accepted = 0
    for case in range(MODEL_CASES):
        if rng.random() < 0.2:  # random bytes
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        else:
            description = json.loads(json.dumps(valid))
            for _ in range(rng.randrange(1, 3)):
                field = rng.choice(fields)
                value = _value(rng)
                if field == "head" and rng.random() < 0.7:
                    value = {"hidden": _value(rng), "dropout": _value(rng)}
                if field == "model" and rng.random() < 0.7:
                    value = {"backbone": "resnet18", rng.choice(["head_hidden", "x"]): _value(rng)}
                description[field] = value
            data = json.dumps(description, allow_nan=True).encode()
        (folder / "model.json").write_bytes(data)
        try:
            load_model(Path(folder))
            accepted += 1
        except UserError:
            pass
        except Exception as error:  # the property: nothing else
            pytest.fail(f"case {case} (seed {SEED}): {type(error).__name__}: {error}\n{data!r}")
    assert accepted > 5  # valid variants were met too
