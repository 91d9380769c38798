"""``ftsweep export --format onnx``: a trial or an ensemble exported, then converted
to ONNX and checked against PyTorch (search/model/onnx.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from search.model.ensemble import export_ensemble
from search.model.export import export_trial, readable_test_set
from search.model.loading import load_model
from search.model.onnx import write_onnx
from search.outputs.layout import SPLIT_FILE
from search.outputs.leaderboard import open_sweep
from trainables.data import read_split


def export_onnx(
    sweep_dir: Path, out_dir: Path, trial_id: str | None = None, *, ensemble: int | None = None
) -> float:
    """``ftsweep export --format onnx``: the trial (or the ensemble of the top
    ``ensemble``) exported, then converted and checked on the sweep's test
    images; returns the largest difference of probabilities."""
    split = read_split(sweep_dir / SPLIT_FILE)
    space = open_sweep(sweep_dir)
    tested = readable_test_set(split, space) if (split["split"] == "test").any() else None
    with tempfile.TemporaryDirectory() as tmp:
        if ensemble is not None:
            folder = export_ensemble(sweep_dir, Path(tmp) / "model", ensemble)
        else:
            folder = export_trial(sweep_dir, Path(tmp) / "model", trial_id)
        return convert_to_onnx(folder, out_dir, tested[0] if tested is not None else None)


def convert_to_onnx(model_dir: Path, out_dir: Path, images: torch.Tensor | None = None) -> float:
    """An exported PyTorch folder written again as an ONNX folder (search/model/onnx.py)."""
    model = load_model(model_dir)
    return write_onnx(model.network, model_dir, out_dir, images)
