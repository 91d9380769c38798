"""load_model: an exported folder (PyTorch, ONNX or an ensemble) as a ready predictor."""

from __future__ import annotations

from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from search.model.description import read_description
from search.model.networks import build_network
from search.model.onnx import ONNX_FILE, OnnxModel
from search.model.predictor import Predictor
from search.outputs.layout import MODEL_FILE, WEIGHTS_FILE
from trainables.errors import UserError
from trainables.loop import predict_logits
from trainables.weights import load_weights


class FineTunedModel(nn.Module, Predictor):
    """An exported classifier: a module in eval mode with its classes, preprocessing
    and temperature (``predict``, ``predict_proba``, ``logits``: search/model/predictor.py)."""

    def __init__(
        self, network: nn.Module, classes: list[str], image_size: int, temperature: float = 1.0
    ) -> None:
        super().__init__()
        self.network = network
        self.classes = list(classes)
        self.image_size = image_size
        self.temperature = temperature
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw logits (before the temperature) for a normalised float batch (NCHW)."""
        return self.network(images)

    def batch_logits(self, batch: torch.Tensor) -> torch.Tensor:
        device = next(self.parameters()).device
        return predict_logits(self.network, batch, device, batch_size=max(1, len(batch)))


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> FineTunedModel:
    """Loads an exported model folder; nothing is unpickled.

    Only model.json (JSON) and model.safetensors (raw tensors) are read, or
    model.onnx in an ONNX folder (run through onnxruntime); any other file in
    the folder is ignored, and a weights file that is not safetensors (a
    pickle, say) is refused.

    Returns:
        A model in eval mode with ``.classes``, ``.temperature``,
        ``.predict(images)`` and ``.predict_proba(images)``; images are PIL
        images, tensors or paths.
    """
    model_dir = Path(model_dir)
    if (model_dir / ONNX_FILE).is_file() and not (model_dir / WEIGHTS_FILE).is_file():
        onnx_description = read_description(model_dir)  # an ONNX folder (search/model/onnx.py)
        return OnnxModel(  # type: ignore[return-value]
            model_dir,
            list(onnx_description["classes"]),
            int(onnx_description["image_size"]),
            float(onnx_description["temperature"]),
        )
    if not (model_dir / MODEL_FILE).is_file() or not (model_dir / WEIGHTS_FILE).is_file():
        raise UserError(
            f"not an exported model folder (needs {MODEL_FILE} and {WEIGHTS_FILE}); "
            "create one with `ftsweep export RESULTS/NAME --out DIR`",
            str(model_dir),
        )
    description = read_description(model_dir)  # every field checked
    backbone, classes = description["backbone"], list(description["classes"])
    try:
        weights = safetensors.torch.load_file(str(model_dir / WEIGHTS_FILE))
    except Exception as exc:  # SafetensorError: a header that is not safetensors
        raise UserError(
            f"{WEIGHTS_FILE} is not a valid safetensors file ({exc}); it is refused, not "
            "unpickled: ftsweep model folders never hold pickles. Export the model again",
            str(model_dir / WEIGHTS_FILE),
        ) from None
    try:
        network = build_network(description)
    except (ValueError, TypeError, KeyError) as exc:  # a combination the builder refuses
        raise UserError(
            f"{MODEL_FILE} describes a model that cannot be built ({exc}); export it again",
            str(model_dir / MODEL_FILE),
        ) from None
    try:
        load_weights(network, weights)
    except RuntimeError as exc:
        raise UserError(
            f"the weights do not fit the model that {MODEL_FILE} describes ({backbone}, "
            f"{len(classes)} classes): {str(exc).splitlines()[0]}; export the model again",
            str(model_dir),
        ) from None
    model = FineTunedModel(
        network, classes, int(description["image_size"]), float(description["temperature"])
    )
    return model.to(device).eval()
