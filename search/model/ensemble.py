"""An ensemble of the sweep's finalists: ``ftsweep export RESULTS/NAME --ensemble K``.

The top K trials by the sweep's metric (those with a checkpoint), each with
its own temperature fitted on the validation split; the ensemble's logits are
the mean of the members' logits divided by their temperatures
(search/model/networks.py). The folder is like any model folder
(model.safetensors with the members' weights, model.json with
``"backbone": "ensemble"`` and ``members``, metrics.json, README.md), so
``load_model``, evaluate, predict and the ONNX export take it.

At a sweep's end the ensemble of its finalists is scored on the test split
beside the single best (ensemble.json, report.md).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import safetensors.torch
import torch

from search.model.card import write_card
from search.model.description import FORMAT_VERSION
from search.model.export import (
    _readable,
    common_description,
    common_metrics,
    member_description,
    versions,
    write_json,
)
from search.model.figures import model_figures, val_temperature
from search.model.networks import ENSEMBLE, Ensemble
from search.model.readouts import Readouts
from search.outputs.layout import (
    ENSEMBLE_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SPLIT_FILE,
    WEIGHTS_FILE,
)
from search.outputs.leaderboard import build_leaderboard, open_sweep, usable
from search.outputs.ray_files import trial_config
from trainables.data import classes_of, read_split
from trainables.errors import UserError

log = logging.getLogger(__name__)


def export_ensemble(sweep_dir: Path, out_dir: Path, size: int) -> Path:
    """Writes a model folder averaging the top ``size`` trials' calibrated logits."""
    space, split, members, networks, figures = _ensemble(sweep_dir, size)
    ensemble = Ensemble(networks, [m["temperature"] for m in members]).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in ensemble.state_dict().items()}
    safetensors.torch.save_file(weights, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    description = {
        "format_version": FORMAT_VERSION,
        "backbone": ENSEMBLE,
        "members": members,
        **common_description(space, split, figures),
        "versions": versions(*(m["backbone"] for m in members)),
    }
    write_json(out_dir / MODEL_FILE, description)
    metrics = {
        "members": [m["trial_id"] for m in members],
        **{name: figures["scores"][name] for name in ("val", "test") if name in figures["scores"]},
        **common_metrics(space, split, figures, ensemble),
    }
    write_json(out_dir / METRICS_FILE, metrics)
    write_card(out_dir)
    return out_dir


def _ensemble(
    sweep_dir: Path, size: int, readouts: Readouts | None = None
) -> tuple[Any, pd.DataFrame, list, list, dict]:
    """The top ``size`` trials: the space, split, members' descriptions and
    networks, and the ensemble's figures (computed from the members' logits,
    as Ensemble.forward combines them; ``readouts``: those the sweep's end
    already computed)."""
    space = open_sweep(sweep_dir)
    frame = build_leaderboard(sweep_dir, finished=True)
    key = f"best_{space.trial.metric}"
    ranked = usable(frame, space.trial.metric) if key in frame else frame[:0]
    if size < 2 or len(ranked) < size:
        raise UserError(
            f"--ensemble takes 2 or more trials and at most the {len(ranked)} with a "
            f"checkpoint in this sweep, not {size} (see `ftsweep leaderboard`)",
            str(sweep_dir),
        )
    split = read_split(sweep_dir / SPLIT_FILE)
    classes = classes_of(split)
    readouts = readouts or Readouts(space, split)
    sets = readouts.sets
    networks, members, scaled = [], [], []
    for _, candidate in ranked.head(size).iterrows():
        row, checkpoint, (network, hparams, meta) = _readable(sweep_dir, [candidate], readouts)
        logits = readouts.logits(checkpoint)
        temperature = val_temperature(logits, sets)
        scaled.append({name: values / temperature for name, values in logits.items()})
        networks.append(network)
        members.append(
            member_description(hparams, row, meta)
            | {"temperature": temperature, "config": space.resolve(trial_config(checkpoint.parent))}
        )
    logits = {name: torch.stack([m[name] for m in scaled]).mean(dim=0) for name in sets}
    return space, split, members, networks, model_figures(logits, sets, classes, temperature=1.0)


def score_finalists_ensemble(
    sweep_dir: Path, finalists: list[dict[str, Any]], readouts: Readouts | None = None
) -> dict[str, Any] | None:
    """At a sweep's end: the test figures of the finalists' ensemble beside the best
    single model's, in ensemble.json (None: fewer than two finalists, or no test)."""
    (sweep_dir / ENSEMBLE_FILE).unlink(missing_ok=True)  # an earlier end's, of other finalists
    if len(finalists) < 2:
        return None
    try:  # the figures only: no weights, speed or card (export --ensemble writes those)
        _, _, members, _, figures = _ensemble(sweep_dir, len(finalists), readouts)
    except UserError as error:  # a finalist's checkpoint gone since it was tested
        log.warning("no ensemble of the finalists: %s", error)
        return None
    if "test" not in figures["scores"]:
        return None
    metrics = {"members": [m["trial_id"] for m in members], "test": figures["scores"]["test"]}
    summary = {
        "members": metrics["members"],
        "test": metrics["test"],
        "single_best": {"trial_id": finalists[0]["trial_id"], "test": finalists[0]["test"]},
        "export": f"ftsweep export {sweep_dir} --ensemble {len(finalists)} --out DIR",
    }
    staging = sweep_dir / f".{ENSEMBLE_FILE}.partial"
    staging.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    os.replace(staging, sweep_dir / ENSEMBLE_FILE)
    log.info(
        "ensemble of the %d finalists: test accuracy %.4f (the best alone: %.4f)",
        len(finalists),
        metrics["test"]["accuracy"],
        finalists[0]["test"]["accuracy"],
    )
    return summary


def read_ensemble(sweep_dir: Path) -> dict[str, Any] | None:
    """ensemble.json, or None where there is none or it cannot be read."""
    path = sweep_dir / ENSEMBLE_FILE
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:  # the fields the report and the sweep's last lines show
        float(found["test"]["accuracy"]) + float(found["single_best"]["test"]["accuracy"])
        return found if isinstance(found["members"], list) and found["export"] else None
    except (KeyError, TypeError, ValueError):  # damaged, or from another version
        return None
