"""The exported model folder (model.safetensors, model.json, metrics.json) and load_model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torchvision
from PIL import Image
from torch import nn

from search.leaderboard import best_trial, build_leaderboard, open_sweep
from search.tuner import SPLIT_FILE
from trainables.augment import MEAN, STD
from trainables.data import classes_of, decode_split, load_image, prepare_image, read_split
from trainables.errors import UserError
from trainables.finetune import load_state
from trainables.hparams import HParams
from trainables.loop import evaluate, predict_logits
from trainables.models import Classifier, build_model

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.json"
METRICS_FILE = "metrics.json"

ImageLike = Image.Image | torch.Tensor | str | Path


def export_trial(sweep_dir: Path, out_dir: Path, trial_id: str | None = None) -> Path:
    """Writes a self-contained model folder for one trial (default: the best).

    The weights are those of the trial's best kept checkpoint. Exporting the
    same trial twice writes identical files.
    """
    space = open_sweep(sweep_dir)
    frame = build_leaderboard(sweep_dir, finished=True)
    if trial_id is None:
        row = best_trial(frame, space.trial.metric)
    else:
        match = frame[frame["trial_id"] == trial_id]
        if match.empty or match.iloc[0]["checkpoint"] is None:
            known = ", ".join(frame["trial_id"].astype(str))
            raise UserError(
                f"no trial '{trial_id}' with a checkpoint; trials: {known}", str(sweep_dir)
            )
        row = match.iloc[0]
    checkpoint = Path(row["checkpoint"])
    state = load_state(checkpoint)
    meta = json.loads((checkpoint / "meta.json").read_text())
    config = json.loads((checkpoint.parent / "params.json").read_text())
    hparams = HParams.from_mapping(space.hparams(config))
    split = read_split(sweep_dir / SPLIT_FILE)
    classes = classes_of(split)

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().clone().contiguous() for k, v in state["model"].items()}
    safetensors.torch.save_file(weights, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    description = {
        "format_version": FORMAT_VERSION,
        "backbone": hparams.backbone,
        "head": {"hidden": hparams.head_hidden, "dropout": hparams.head_dropout},
        "classes": classes,
        "image_size": space.data.image_size,
        "normalization": {"mean": list(MEAN), "std": list(STD)},
        "trial_id": str(row["trial_id"]),
        "epoch": meta["epoch"],
        "config": space.resolve(config),
        "metrics": meta,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
    }
    _write_json(out_dir / MODEL_FILE, description)
    metrics: dict[str, Any] = {
        "trial_id": str(row["trial_id"]),
        "epoch": meta["epoch"],
        "val": {k.removeprefix("val_"): v for k, v in meta.items() if k.startswith("val_")},
    }
    if (split["split"] == "test").any():
        metrics["test"] = _test_metrics(out_dir, split, space.data.path, space.data.image_size)
    _write_json(out_dir / METRICS_FILE, metrics)
    return out_dir


def replace_folder(source: Path, target: Path) -> None:
    """Moves a finished export into place, replacing an older one."""
    if target.exists():
        shutil.rmtree(target)
    source.rename(target)


class FineTunedModel(nn.Module):
    """An exported classifier: a module in eval mode with its classes and preprocessing."""

    def __init__(self, network: Classifier, classes: list[str], image_size: int) -> None:
        super().__init__()
        self.network = network
        self.classes = list(classes)
        self.image_size = image_size
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a normalised float batch (NCHW)."""
        return self.network(images)

    def predict_proba(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Class probabilities (N x classes) for PIL images, tensors or paths."""
        batch = self._prepare(images)
        device = next(self.parameters()).device
        return predict_logits(self.network, batch, device).softmax(dim=1)

    def predict(self, images: ImageLike | Sequence[ImageLike]) -> list[str]:
        """The most likely class name of each image."""
        return [self.classes[i] for i in self.predict_proba(images).argmax(dim=1).tolist()]

    def _prepare(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        items: Sequence[ImageLike]
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            items = list(images)
        elif isinstance(images, list | tuple):
            items = images
        else:
            items = [images]  # type: ignore[list-item]
        prepared = [
            load_image(Path(im), self.image_size)
            if isinstance(im, str | Path)
            else prepare_image(im, self.image_size)
            for im in items
        ]
        return torch.stack(prepared)


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> FineTunedModel:
    """Loads an exported model folder; nothing is unpickled.

    Returns:
        A module in eval mode with ``.classes``, ``.predict(images)`` and
        ``.predict_proba(images)``; images are PIL images, tensors or paths.
    """
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_FILE).is_file() or not (model_dir / WEIGHTS_FILE).is_file():
        raise UserError(
            f"not an exported model folder (needs {MODEL_FILE} and {WEIGHTS_FILE}); "
            "create one with `ftsweep export`",
            str(model_dir),
        )
    description = json.loads((model_dir / MODEL_FILE).read_text())
    network = build_model(
        description["backbone"],
        len(description["classes"]),
        head_hidden=description["head"]["hidden"],
        head_dropout=description["head"]["dropout"],
        image_size=description["image_size"],
    )
    network.load_state_dict(safetensors.torch.load_file(str(model_dir / WEIGHTS_FILE)))
    model = FineTunedModel(network, description["classes"], description["image_size"])
    return model.to(device).eval()


def _test_metrics(model_dir: Path, split: Any, data_root: str | None, image_size: int) -> dict:
    model = load_model(model_dir)
    _, sets = decode_split(split[split["split"] == "test"], data_root, image_size)
    # decode_split indexes classes of the given rows only; map by name instead.
    test = sets["test"]
    names = sorted(split[split["split"] == "test"]["label"].unique())
    labels = torch.tensor([model.classes.index(names[i]) for i in test.labels.tolist()])
    return evaluate(model.network, test.images, labels, torch.device("cpu"))


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=float) + "\n")
