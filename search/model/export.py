"""The exported model folder (model.safetensors, model.json, metrics.json) and load_model."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import safetensors.torch
import torch
import torchvision
from PIL import Image
from torch import nn

from search.model.description import FORMAT_VERSION, read_description
from search.model.onnx import ONNX_FILE, OnnxModel, as_items, prepare, write_onnx
from search.outputs.layout import METRICS_FILE, MODEL_FILE, SPLIT_FILE, WEIGHTS_FILE
from search.outputs.leaderboard import best_trial, build_leaderboard, open_sweep, read_finalists
from search.outputs.ray_files import trial_config
from search.outputs.storage import local_checkpoint
from search.space.loader import Space
from trainables import timm_backbones
from trainables.augment import MEAN, STD
from trainables.checkpoint_files import META_FILE
from trainables.checkpoints import load_state
from trainables.data import classes_of, decode_split, read_split
from trainables.errors import UserError
from trainables.hparams import MODEL, HParams
from trainables.loop import evaluate, predict_logits
from trainables.models import Classifier, inference_network
from trainables.timm_backbones import is_timm
from trainables.weights import inference_weights

log = logging.getLogger(__name__)

ImageLike = Image.Image | torch.Tensor | str | Path


def export_trial(
    sweep_dir: Path,
    out_dir: Path,
    trial_id: str | None = None,
    *,
    finalists: list[dict[str, Any]] | None = None,
) -> Path:
    """Writes a self-contained model folder for one trial (default: the best).

    The weights are those of the trial's best kept checkpoint. Exporting the
    same trial twice writes identical files.

    Args:
        finalists: the trials tested at the end of the sweep (rank, trial id,
            validation and test metrics), listed in metrics.json.
    """
    space = open_sweep(sweep_dir)
    frame = build_leaderboard(sweep_dir, finished=True)
    if trial_id is None:
        best_trial(frame, space.trial.metric)  # says so when no trial has a checkpoint
        key = f"best_{space.trial.metric}"
        rows = [r for _, r in frame[frame[key].notna() & frame["checkpoint"].notna()].iterrows()]
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
    row, checkpoint, (network, hparams, meta) = _readable(sweep_dir, space, rows, split)

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    safetensors.torch.save_file(weights, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    description = {
        "format_version": FORMAT_VERSION,
        "backbone": hparams.backbone,
        "head": {"hidden": hparams.head_hidden, "dropout": hparams.head_dropout},
        "model": hparams.group(MODEL),  # build_model's arguments (hparams.py's model group)
        "classes": classes_of(split),
        "image_size": space.data.image_size,
        # What the network takes: RGB in [0, 1], resized (shorter side, antialiased
        # bilinear) and centre-cropped to image_size, then normalised with this.
        "normalization": {"mean": list(MEAN), "std": list(STD)},
        "preprocessing": {"resize": "bilinear, antialiased", "crop": "center"},
        **_pretrained_input(hparams.backbone),
        "trial_id": str(row["trial_id"]),
        "epoch": meta["epoch"],
        "config": space.resolve(trial_config(checkpoint.parent)),
        "metrics": meta,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__}
        | _timm_version(hparams.backbone),
    }
    _write_json(out_dir / MODEL_FILE, description)
    metrics: dict[str, Any] = {
        "trial_id": str(row["trial_id"]),
        "epoch": meta["epoch"],
        "val": {k.removeprefix("val_"): v for k, v in meta.items() if k.startswith("val_")},
    }
    tested = read_finalists(sweep_dir).get(str(row["trial_id"]))
    if tested and tested.get("checkpoint") == str(checkpoint):
        metrics["test"] = tested["test"]
    elif (split["split"] == "test").any() and (scores := test_metrics(network, split, space)):
        metrics["test"] = scores
    if finalists:
        metrics["finalists"] = finalists
    _write_json(out_dir / METRICS_FILE, metrics)
    return out_dir


def _readable(
    sweep_dir: Path, space: Space, rows: list[pd.Series], split: pd.DataFrame
) -> tuple[pd.Series, Path, tuple[Classifier, HParams, dict]]:
    """The first of ``rows`` (best first) whose checkpoint can be read, with it;
    each one skipped is named. None readable: a UserError naming the last."""
    for number, row in enumerate(rows):
        checkpoint = local_checkpoint(sweep_dir, Path(row["checkpoint"]))
        try:
            return row, checkpoint, checkpoint_network(space, checkpoint, len(classes_of(split)))
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


def checkpoint_network(
    space: Space, checkpoint: Path, num_classes: int
) -> tuple[Classifier, HParams, dict]:
    """The network of a trial's checkpoint (CPU, eval mode), its hyperparameters and metrics."""
    state = load_state(checkpoint)
    meta = json.loads((checkpoint / META_FILE).read_text())
    config = trial_config(checkpoint.parent)
    hparams = HParams.from_mapping(space.hparams(config))
    network = inference_network(hparams.group(MODEL), num_classes, space.data.image_size)
    network.load_state_dict(inference_weights(state))
    return network.eval(), hparams, meta


def test_set(split: pd.DataFrame, space: Space) -> tuple[torch.Tensor, torch.Tensor]:
    """The sweep's test images, labelled with the class index the trials trained with."""
    classes = classes_of(split)
    test = split[split["split"] == "test"]
    _, sets = decode_split(test, space.data.root, space.data.image_size)
    names = classes_of(test)  # decode_split indexes the given rows' classes only
    labels = torch.tensor([classes.index(names[i]) for i in sets["test"].labels.tolist()])
    return sets["test"].images, labels


def readable_test_set(
    split: pd.DataFrame, space: Space
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """test_set, or None with a warning when its images cannot be read any more
    (deleted or changed since the run): the sweep's end then goes on without
    test scores rather than stopping before best/ is written."""
    try:
        return test_set(split, space)
    except UserError as error:
        log.warning("no test scores: the test images cannot be read (%s)", error)
        return None


def test_metrics(network: nn.Module, split: pd.DataFrame, space: Space) -> dict[str, float] | None:
    """Loss, accuracy and macro F1 of a network on the sweep's test split (None:
    its images cannot be read)."""
    test = readable_test_set(split, space)
    if test is None:
        return None
    images, labels = test
    device = default_device()
    result = evaluate(network.to(device), images, labels, device)
    network.cpu()
    return result


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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

    def predict_proba(
        self, images: ImageLike | Sequence[ImageLike], *, batch_size: int = 64
    ) -> torch.Tensor:
        """Class probabilities (N x classes) for PIL images, tensors or paths.

        Images are decoded and run ``batch_size`` at a time, on the device the
        model is on, with the preprocessing the model was trained with.
        """
        items = self._items(images)
        device = next(self.parameters()).device
        outputs = []
        for start in range(0, len(items), batch_size):
            batch = torch.stack([self.prepare(im) for im in items[start : start + batch_size]])
            logits = predict_logits(self.network, batch, device, batch_size=batch_size)
            outputs.append(logits.softmax(dim=1))
        return torch.cat(outputs) if outputs else torch.empty(0, len(self.classes))

    def predict(
        self, images: ImageLike | Sequence[ImageLike], *, batch_size: int = 64
    ) -> list[str]:
        """The most likely class name of each image."""
        probabilities = self.predict_proba(images, batch_size=batch_size)
        return [self.classes[i] for i in probabilities.argmax(dim=1).tolist()]

    def prepare(self, image: ImageLike) -> torch.Tensor:
        """One image -> the uint8 CHW tensor the network takes (resize, centre crop)."""
        return prepare(image, self.image_size)

    @staticmethod
    def _items(images: ImageLike | Sequence[ImageLike]) -> Sequence[ImageLike]:
        return as_items(images)


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> FineTunedModel:
    """Loads an exported model folder; nothing is unpickled.

    Only model.json (JSON) and model.safetensors (raw tensors) are read; any
    other file in the folder is ignored, and a weights file that is not
    safetensors (a pickle, say) is refused.

    Returns:
        A module in eval mode with ``.classes``, ``.predict(images)`` and
        ``.predict_proba(images)``; images are PIL images, tensors or paths.
    """
    model_dir = Path(model_dir)
    if (model_dir / ONNX_FILE).is_file() and not (model_dir / WEIGHTS_FILE).is_file():
        onnx_description = read_description(model_dir)  # an ONNX folder (search/model/onnx.py)
        classes = list(onnx_description["classes"])
        return OnnxModel(model_dir, classes, int(onnx_description["image_size"]))  # type: ignore[return-value]
    if not (model_dir / MODEL_FILE).is_file() or not (model_dir / WEIGHTS_FILE).is_file():
        raise UserError(
            f"not an exported model folder (needs {MODEL_FILE} and {WEIGHTS_FILE}); "
            "create one with `ftsweep export RESULTS/NAME --out DIR`",
            str(model_dir),
        )
    description = read_description(model_dir)  # every field checked
    backbone, classes = description["backbone"], list(description["classes"])
    image_size = int(description["image_size"])
    try:
        weights = safetensors.torch.load_file(str(model_dir / WEIGHTS_FILE))
    except Exception as exc:  # SafetensorError: a header that is not safetensors
        raise UserError(
            f"{WEIGHTS_FILE} is not a valid safetensors file ({exc}); it is refused, not "
            "unpickled: ftsweep model folders never hold pickles. Export the model again",
            str(model_dir / WEIGHTS_FILE),
        ) from None
    try:
        network = inference_network(description["model"], len(classes), image_size)
    except (ValueError, TypeError, KeyError) as exc:  # a combination the builder refuses
        raise UserError(
            f"{MODEL_FILE} describes a model that cannot be built ({exc}); export it again",
            str(model_dir / MODEL_FILE),
        ) from None
    try:
        network.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(
            f"the weights do not fit the model that {MODEL_FILE} describes ({backbone}, "
            f"{len(classes)} classes): {str(exc).splitlines()[0]}; export the model again",
            str(model_dir),
        ) from None
    model = FineTunedModel(network, classes, image_size)
    return model.to(device).eval()


def _write_json(path: Path, value: Any) -> None:
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


def export_onnx(sweep_dir: Path, out_dir: Path, trial_id: str | None = None) -> float:
    """``ftsweep export --format onnx``: the trial exported (as export_trial), then
    converted and checked on the sweep's test images; returns the largest difference."""
    split = read_split(sweep_dir / SPLIT_FILE)
    space = open_sweep(sweep_dir)
    tested = readable_test_set(split, space) if (split["split"] == "test").any() else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_trial(sweep_dir, Path(tmp) / "model", trial_id)
        return convert_to_onnx(folder, out_dir, tested[0] if tested is not None else None)


def convert_to_onnx(model_dir: Path, out_dir: Path, images: torch.Tensor | None = None) -> float:
    """An exported PyTorch folder written again as an ONNX folder (search/model/onnx.py)."""
    model = load_model(model_dir)
    return write_onnx(model.network, model_dir, out_dir, images)
