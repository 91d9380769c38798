"""The exported model folder (model.safetensors, model.json, metrics.json, README.md).

An export fits the model's temperature on the validation split, scores it on
the validation and test splits, measures its speed and writes a model card
(search/model/card.py). ``load_model`` (search/model/loading.py) reads it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import safetensors.torch
import torch
import torchvision
from torch import nn

from search.model.card import write_card
from search.model.description import SINGLE_FORMAT
from search.model.figures import (
    Labelled,
    default_device,
    model_figures,
    readable_split_set,
    speed_figures,
    split_sizes,
)
from search.model.loading import FineTunedModel, load_model  # re-exported: earlier imports
from search.model.readouts import Read, Readouts, checkpoint_network
from search.outputs.layout import METRICS_FILE, MODEL_FILE, SPLIT_FILE, WEIGHTS_FILE
from search.outputs.leaderboard import (
    best_trial,
    build_leaderboard,
    open_sweep,
    read_finalists,
    usable,
)
from search.outputs.ray_files import trial_config
from search.outputs.storage import local_checkpoint
from search.space.loader import Space
from trainables import timm_backbones
from trainables.augment import MEAN, STD
from trainables.data import classes_of, read_split
from trainables.errors import UserError
from trainables.hparams import MODEL, HParams
from trainables.timm_backbones import is_timm

__all__ = ["FineTunedModel", "checkpoint_network", "default_device", "export_trial", "load_model"]

log = logging.getLogger(__name__)


def export_trial(
    sweep_dir: Path,
    out_dir: Path,
    trial_id: str | None = None,
    *,
    finalists: list[dict[str, Any]] | None = None,
    readouts: Readouts | None = None,
) -> Path:
    """Writes a self-contained model folder for one trial (default: the best).

    The weights are those of the trial's best kept checkpoint; the temperature
    is fitted on the validation split. Exporting the same trial twice writes
    identical weights.

    Args:
        finalists: the trials tested at the end of the sweep (rank, trial id,
            validation and test metrics), listed in metrics.json.
        readouts: the checkpoints read and scored so far at the sweep's end
            (search/model/readouts.py); a fresh one by default.
    """
    space = open_sweep(sweep_dir)
    frame = build_leaderboard(sweep_dir, finished=True)
    if trial_id is None:
        best_trial(frame, space.trial.metric)  # says so when no trial can be picked
        rows = [r for _, r in usable(frame, space.trial.metric).iterrows()]
    else:
        match = frame[frame["trial_id"] == trial_id]
        if match.empty or pd.isna(match.iloc[0]["checkpoint"]):
            known = ", ".join(frame[frame["checkpoint"].notna()]["trial_id"].astype(str))
            raise UserError(
                f"no trial '{trial_id}' with a checkpoint in this sweep; "
                f"trials with one: {known or 'none'} (see `ftsweep leaderboard`)",
                str(sweep_dir),
            )
        rows = [match.iloc[0]]
    split = read_split(sweep_dir / SPLIT_FILE)
    readouts = readouts or Readouts(space, split)
    row, checkpoint, (network, hparams, meta) = _readable(sweep_dir, rows, readouts)
    figures = model_figures(readouts.logits(checkpoint), readouts.sets, classes_of(split))
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    safetensors.torch.save_file(weights, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    description = {
        "format_version": SINGLE_FORMAT,
        **member_description(hparams, row, meta),
        "config": space.resolve(trial_config(checkpoint.parent)),
        **common_description(space, split, figures),
        "metrics": meta,
        "versions": versions(hparams.backbone),
    }
    write_json(out_dir / MODEL_FILE, description)
    metrics: dict[str, Any] = {
        "trial_id": str(row["trial_id"]),
        "epoch": meta["epoch"],
        "val": {k.removeprefix("val_"): v for k, v in meta.items() if k.startswith("val_")},
    }
    tested = read_finalists(sweep_dir).get(str(row["trial_id"]))
    if tested and tested.get("checkpoint") == str(checkpoint):
        metrics["test"] = tested["test"]
    elif "test" in figures["scores"]:
        metrics["test"] = figures["scores"]["test"]
    if finalists:
        metrics["finalists"] = finalists
    metrics |= common_metrics(space, split, figures, network)
    write_json(out_dir / METRICS_FILE, metrics)
    write_card(out_dir)
    return out_dir


def member_description(hparams: HParams, row: pd.Series, meta: dict) -> dict[str, Any]:
    """One trained model's fields of model.json (an ensemble lists one per member)."""
    return {
        "backbone": hparams.backbone,
        "head": {"hidden": hparams.head_hidden, "dropout": hparams.head_dropout},
        "model": hparams.group(MODEL),  # build_model's arguments (hparams.py's model group)
        **_pretrained_input(hparams.backbone),
        "trial_id": str(row["trial_id"]),
        "epoch": meta["epoch"],
    }


def common_description(space: Space, split: pd.DataFrame, figures: dict) -> dict[str, Any]:
    """model.json's fields for any exported model: classes, input, temperature."""
    return {
        "classes": classes_of(split),
        "image_size": space.data.image_size,
        # What the network takes: RGB in [0, 1], resized (shorter side, antialiased
        # bilinear) and centre-cropped to image_size, then normalised with this.
        "normalization": {"mean": list(MEAN), "std": list(STD)},
        "preprocessing": {"resize": "bilinear, antialiased", "crop": "center"},
        # Probabilities are softmax(logits / temperature), fitted on the validation split.
        "temperature": figures["temperature"],
        "calibration": {"split": "val"} | figures["calibration"].get("val", {}),
    }


def common_metrics(
    space: Space, split: pd.DataFrame, figures: dict, network: nn.Module
) -> dict[str, Any]:
    """metrics.json's fields for the model card: data, calibration, per-class, speed."""
    return {
        "data": space.data.described,
        "split_sizes": split_sizes(split),
        "calibration": {"temperature": figures["temperature"], **figures["calibration"]},
        "per_class": figures.get("per_class"),
        "speed": speed_figures(network, space.data.image_size),
    }


def versions(*backbones: str) -> dict[str, str]:
    found = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    return found | next((_timm_version(b) for b in backbones if is_timm(b)), {})


def _readable(
    sweep_dir: Path, rows: list[pd.Series], readouts: Readouts
) -> tuple[pd.Series, Path, Read]:
    """The first of ``rows`` (best first) whose checkpoint can be read, with it;
    each one skipped is named. None readable: a UserError naming the last."""
    for number, row in enumerate(rows):
        checkpoint = local_checkpoint(sweep_dir, Path(row["checkpoint"]))
        try:
            return row, checkpoint, readouts.network(checkpoint)
        except Exception as error:  # truncated, deleted, not a checkpoint of this sweep
            problem = f"{checkpoint} cannot be read ({type(error).__name__}: {error})"[:500]
            if number == len(rows) - 1:
                raise UserError(
                    f"{problem}; no {'other ' if number else ''}trial to export instead "
                    "(resume with --retry-errored, or export another trial: --trial ID)",
                    str(sweep_dir),
                ) from None
            log.warning(
                "trial %s: %s; exporting the next best, trial %s",
                row["trial_id"],
                problem,
                rows[number + 1]["trial_id"],
            )
    raise UserError("no trial to export", str(sweep_dir))


def readable_test_set(split: pd.DataFrame, space: Space) -> Labelled | None:
    """The test split, or None with a warning when its images cannot be read any
    more (deleted or changed since the run)."""
    return readable_split_set(split, space.data.root, space.data.image_size, "test")


def replace_folder(source: Path, target: Path) -> None:
    """Moves a finished export into place, replacing an older one."""
    if target.exists():
        shutil.rmtree(target)
    source.rename(target)


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=float) + "\n")


def _pretrained_input(backbone: str) -> dict[str, Any]:
    """A timm backbone's pretrained configuration (its own mean and std, which
    the network applies inside, from the ImageNet-normalised input)."""
    if not is_timm(backbone):
        return {}
    cfg = timm_backbones.pretrained_cfg(backbone)
    return {
        "pretrained_input": {
            "mean": list(cfg.mean),
            "std": list(cfg.std),
            "interpolation": cfg.interpolation,
            "input_size": list(cfg.input_size),
            "hf_hub_id": cfg.hf_hub_id,
        }
    }


def _timm_version(backbone: str) -> dict[str, str]:
    return {"timm": timm_backbones.require().__version__} if is_timm(backbone) else {}
