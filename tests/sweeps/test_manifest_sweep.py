"""A sweep on a manifest (CSV with groups, relative and absolute paths) over a
torchvision and a timm backbone, end to end: init writes a space for it,
validate reads it, run splits by group, export and predict take the timm
model, evaluate scores the sweep's test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from search import load_model
from search.cli import main

pytestmark = pytest.mark.slow

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def draw_manifest(tmp_path: Path) -> Path:
    """Three colour classes, 8 groups (say, patients) of 3 images each per
    class; one group's images live outside the manifest's folder (absolute paths)."""
    rng = np.random.default_rng(0)
    data, outside = tmp_path / "project", tmp_path / "elsewhere"
    rows = []
    for label, colour in COLOURS.items():
        for group in range(8):
            for i in range(3):
                folder = outside if group == 0 else data / "images"
                folder.mkdir(parents=True, exist_ok=True)
                name = f"{label}-{group}-{i}.png"
                noise = rng.integers(-30, 30, (20, 20, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / name)
                path = str(folder / name) if group == 0 else f"images/{name}"
                rows.append({"path": path, "label": label, "group": f"{label}{group}"})
    file = data / "labels.csv"
    pd.DataFrame(rows).to_csv(file, index=False)
    return file


def test_manifest_sweep_end_to_end(tmp_path, monkeypatch, capsys, ray_stops):
    file = draw_manifest(tmp_path)
    monkeypatch.chdir(tmp_path)  # the space names the manifest relative to here
    starter = tmp_path / "starter.yaml"
    assert main(["init", str(file), "--out", str(starter)]) == 0
    written = yaml.safe_load(starter.read_text())
    assert written["data"]["manifest"] == str(file.resolve()) and written["name"] == "labels"
    assert "held out of the training images, by group" in starter.read_text()

    space = tmp_path / "m.yaml"
    space.write_text(
        """
name: m
data:
  manifest: project/labels.csv
  image_size: 16
  val_fraction: 0.25
  test_fraction: 0.25
  sampler: balanced
trial: {max_epochs: 1, batch_size: 16, precision: fp32, metric: val_balanced_accuracy}
search:
  num_samples: 2
  max_concurrent: 2
  seed: 0
  scheduler: {type: none}
  finalists: 1
  start_from: [{backbone: squeezenet1_1}, {backbone: timm/resnet10t.c3_in1k}]
resources: {cpus: 1}
space:
  backbone: {choice: [squeezenet1_1, timm/resnet10t.c3_in1k]}
  weights: none
  lr: {loguniform: [1.0e-3, 1.0e-2]}
  class_weights: {choice: [inverse, sqrt_inverse]}
"""
    )
    assert main(["validate", str(space), "--no-timing"]) == 0
    out = capsys.readouterr().out
    assert "data: project/labels.csv: 72 images" in out, out

    assert main(["run", str(space), "--results", "results"]) == 0, capsys.readouterr().err[-3000:]
    sweep = tmp_path / "results" / "m"
    saved = yaml.safe_load((sweep / "space.yaml").read_text())
    assert saved["data"]["manifest"] == str(file.resolve())  # absolute: resumable from anywhere
    split = pd.read_csv(sweep / "split.csv")
    assert len(split) == 72 and (split.groupby("group")["split"].nunique() == 1).all()
    assert set(split["split"]) == {"train", "val", "test"}
    assert (split["path"].str.startswith("/")).sum() == 9  # the absolute ones, as written
    board = pd.read_csv(sweep / "leaderboard.csv")
    assert set(board["status"]) == {"completed"}
    assert set(board["class_weights"]) <= {"inverse", "sqrt_inverse"}
    ranked = board["best_val_balanced_accuracy"]  # the sweep's metric ranks it
    assert ranked.is_monotonic_decreasing and board["best_val_min_recall"].between(0, 1).all()
    assert board["test_balanced_accuracy"].notna().sum() == 1  # the finalist's
    assert set(board["backbone"]) == {"squeezenet1_1", "timm/resnet10t.c3_in1k"}
    capsys.readouterr()

    timm_trial = board.loc[board["backbone"] == "timm/resnet10t.c3_in1k", "trial_id"].iloc[0]
    exported = tmp_path / "timm-model"
    assert main(["export", str(sweep), "--trial", timm_trial, "--out", str(exported)]) == 0
    description = json.loads((exported / "model.json").read_text())
    assert description["backbone"] == "timm/resnet10t.c3_in1k"
    assert description["pretrained_input"]["interpolation"] == "bicubic"
    assert "timm" in description["versions"]
    model = load_model(exported)
    images = sorted((tmp_path / "project" / "images").glob("*.png"))[:4]
    assert len(model.predict([str(p) for p in images])) == 4
    capsys.readouterr()

    monkeypatch.chdir(tmp_path / "elsewhere")  # evaluate from another folder
    out_dir = tmp_path / "eval"
    assert main(["evaluate", str(sweep / "best"), str(sweep), "--out", str(out_dir)]) == 0
    text = capsys.readouterr().out
    tested = (split["split"] == "test").sum()
    assert f"{tested} images" in text and "balanced accuracy" in text, text
    predictions = pd.read_csv(out_dir / "predictions.csv")
    assert len(predictions) == tested
