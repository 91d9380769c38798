"""The space loader: every construct, and every error names its line and key."""

from __future__ import annotations

import pytest

from search.space.loader import load_space
from search.space.params import walk
from tests.conftest import MINIMAL, REPO
from trainables.errors import UserError


def test_every_shipped_space_loads():
    files = sorted((REPO / "spaces").glob("*.yaml"))
    assert len(files) >= 2
    for path in files:
        space = load_space(path)
        assert space.params


def test_every_construct(write_space):
    path = write_space(
        """
        name: constructs
        data: {source: digits, image_size: 32, val_fraction: 0.2, test_fraction: 0}
        trial: {max_epochs: 5, batch_size: 16, metric: val_loss}
        search:
          num_samples: 7
          time_budget: 1h30m
          sampler: random
          start_from: [{optimizer: sgd, momentum: 0.9, lr: 1e-3}]
          scheduler: {type: none}
        resources: {cpus: 2, gpus: 0.25}
        space:
          backbone: {choice: [resnet18, mobilenet_v3_small]}
          frozen_depth: {int: [0, 4], step: 2}
          head_hidden: {int: [16, 256], log: true}
          head_dropout: {uniform: [0.0, 0.5], step: 0.1}
          lr: {loguniform: [1e-5, 1.0e-2]}
          optimizer:
            choice:
              adamw: {weight_decay: {loguniform: [1e-5, 1e-1]}}
              sgd: {momentum: {uniform: [0.8, 0.99]}, nesterov: true}
        """
    )
    space = load_space(path)
    assert space.trial.mode == "min"  # implied by val_loss
    assert space.search.time_budget_s == 5400
    assert space.resources.gpus == 0.25
    params = {p.column: p for p in walk(space.params)}
    assert params["frozen_depth"].step == 2
    assert params["head_hidden"].log and params["head_hidden"].kind == "int"
    assert params["lr"].low == pytest.approx(1e-5)  # "1e-5" is a string to PyYAML
    assert params["optimizer/momentum"].key == "optimizer.sgd.momentum"
    assert params["optimizer/nesterov"].kind == "const"
    assert space.search.start_from == (
        {"optimizer": "sgd", "optimizer.sgd.momentum": 0.9, "lr": 1e-3},
    )


def test_flags_override_file(write_space):
    space = load_space(write_space(MINIMAL), {"search.num_samples": 3, "name": "other"})
    assert space.search.num_samples == 3 and space.name == "other"
    assert space.raw["search"]["num_samples"] == 3


BAD = [
    # (yaml under `space:` or a whole file, expected words, expected line)
    (
        "space:\n  backbone: resnet18\n  lrr: 0.1\n",
        "unknown parameter 'lrr' (did you mean 'lr'?)",
        3,
    ),
    ("space:\n  backbone: resnet_18\n", "unknown backbone 'resnet_18'", 2),
    ("space:\n  backbone: resnet18\n  lr: {loguniform: [1e-2, 1e-5]}\n", "reversed range", 3),
    ("space:\n  backbone: resnet18\n  lr: {uniform: [0.1, 0.1]}\n", "empty or reversed range", 3),
    ("space:\n  backbone: resnet18\n  frozen_depth: {uniform: [0, 2]}\n", "use int", 3),
    ("space:\n  backbone: resnet18\n  head_hidden: 1.5\n", "takes an integer", 3),
    ("space:\n  backbone: resnet18\n  lr: fast\n", "takes a number", 3),
    ("space:\n  backbone: resnet18\n  nesterov: {choice: [yes please]}\n", "true or false", 3),
    ("space:\n  backbone: resnet18\n  optimizer: adam\n", "one of adamw, sgd", 3),
    ("space:\n  backbone: resnet18\n  lr: {choice: []}\n", "non-empty list", 3),
    ("space:\n  backbone: resnet18\n  lr: {loguniform: [0, 1]}\n", "must be >=", 3),
    (
        "space:\n  backbone: resnet18\n  head_dropout: {uniform: [0, 1.5]}\n",
        "must be >= 0 and < 1",
        3,
    ),
    ("space:\n  backbone: resnet18\n  lr: {uniform: [0.1, 0.2], lg: 1}\n", "exactly one of", 3),
    (
        "space:\n  backbone: resnet18\n  lr: {loguniform: [1e-4, 1e-2], step: 1e-4}\n",
        "step with a log",
        3,
    ),
    ("space:\n  backbone: resnet18\n  weights: IMAGENET9K\n", "unknown weights 'IMAGENET9K'", 3),
    ("space:\n  backbone: resnet18\n  weights: /no/such/file.pth\n", "weights file not found", 3),
    ("space:\n  lr: 0.1\n", "needs at least backbone", 1),
    (
        "space:\n  backbone: resnet18\n  optimizer:\n    choice:\n      adamw: {momentum: 0.9}\n",
        "'momentum' applies only to optimizer: sgd",
        5,
    ),
    (
        "space:\n  backbone: resnet18\n  lr: 0.1\n  optimizer:\n    choice:\n      sgd: {lr: 0.2}\n",
        "already set at an outer level",
        6,
    ),
    (
        "space:\n  backbone: resnet18\nsearch:\n  samplr: tpe\n",
        "unknown key 'samplr' (did you mean 'sampler'?)",
        4,
    ),
    ("space:\n  backbone: resnet18\nsearch:\n  sampler: bayes\n", "sampler must be one of", 4),
    ("space:\n  backbone: resnet18\nsearch:\n  time_budget: soon\n", "a duration like", 4),
    ("space:\n  backbone: resnet18\nsearch:\n  num_samples: ten\n", "expected an integer", 4),
    (
        "space:\n  backbone: resnet18\nsearch:\n  scheduler: {type: hyperband}\n",
        "scheduler type",
        4,
    ),
    (
        "space:\n  backbone: resnet18\n  lr: {uniform: [0.1, 0.2]}\nsearch:\n  start_from: [{lr: 5}]\n",
        "outside the space",
        5,
    ),
    (
        "space:\n  backbone: resnet18\nsearch:\n  start_from: [{momentum: 0.9}]\n",
        "not a searched parameter",
        4,
    ),
    ("space:\n  backbone: resnet18\ntrial:\n  metric: accuracy\n", "unknown metric 'accuracy'", 4),
    ("space:\n  backbone: resnet18\ntrial:\n  metric: val_loss\n  mode: max\n", "mode: min", 5),
    ("space:\n  backbone: resnet18\ntrial:\n  precision: fp8\n", "precision must be one of", 4),
    (
        "space:\n  backbone: resnet18\ntrial:\n  max_failures: -1\n",
        "max_failures must be between 0",
        4,
    ),
    (
        "data:\n  source: digits\n  bad_files: ignore\nspace:\n  backbone: resnet18\n",
        "bad_files must be one of skip, fail",
        3,
    ),
    (
        "data:\n  source: digits\n  sampler: oversample\nspace:\n  backbone: resnet18\n",
        "sampler must be one of uniform, balanced",
        3,
    ),
    (
        "data:\n  source: digits\n  manifest: l.csv\nspace:\n  backbone: resnet18\n",
        "exactly one of path:",
        2,
    ),
    ("space:\n  backbone: resnet18\n  class_weights: inverted\n", "class_weights", 3),
    ("space:\n  backbone: resnet18\nresources: {gpus: 1.5}\n", "fraction of one GPU", 3),
    ("space:\n  backbone: resnet18\nresoures: {cpus: 1}\n", "unknown key 'resoures'", 3),
    ("space:\n  backbone: resnet18\n  lr: 0.1\n  lr: 0.2\n", "appears twice", 4),
    ("space:\n  backbone: [resnet18\n", "YAML syntax error", 3),
]


@pytest.mark.parametrize(("text", "words", "line"), BAD, ids=[b[1][:40] for b in BAD])
def test_errors_name_key_and_line(write_space, text, words, line):
    header = "name: bad\ndata: {source: digits}\n" if "data:" not in text else ""
    path = write_space(text.replace("space:", header + "space:", 1) if header else text)
    offset = header.count("\n")
    with pytest.raises(UserError) as info:
        load_space(path)
    message = str(info.value)
    assert words in message
    assert f"{path}:{line + offset}" in message


def test_data_section_errors(write_space):
    for data, words in [
        ("{}", "exactly one of path"),
        ("{source: mnist}", "unknown source"),
        ("{source: digits, val_fraction: 0.6, test_fraction: 0.5}", "sum < 1"),
        ("{source: digits, image_size: 8}", "at least 16"),
    ]:
        path = write_space(f"data: {data}\nspace:\n  backbone: resnet18\n")
        with pytest.raises(UserError, match="data"):
            load_space(path)
        with pytest.raises(UserError) as info:
            load_space(path)
        assert words in str(info.value)


def test_missing_file():
    with pytest.raises(UserError, match="file not found"):
        load_space(REPO / "spaces" / "nope.yaml")
