"""ONNX export (the ``ftsweep[onnx]`` extra), checked against PyTorch, and ONNX model folders.

``model.onnx`` takes uint8 RGB images, NCHW at the model's image size (resized
on the shorter side and centre-cropped, as for training), with a dynamic batch
axis; it divides by 255 and normalises inside, and returns ``logits`` and
``probabilities`` (the softmax of the logits divided by model.json's
``temperature``). At export it runs in onnxruntime on the sweep's test images
(or drawn ones) beside the PyTorch network: a probability more than
``TOLERANCE`` apart, or a different top-1 class, fails the export. An ONNX
folder holds model.onnx, model.json (``"format": "onnx"``) and metrics.json;
``load_model``, ``predict`` and ``evaluate`` run it through onnxruntime.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.model.card import write_card
from search.model.predictor import Predictor
from search.outputs.layout import METRICS_FILE, MODEL_FILE
from trainables.augment import MEAN, STD
from trainables.errors import UserError

ONNX_FILE = "model.onnx"
TOLERANCE = 1e-4  # the largest difference of probabilities allowed at export
INSTALL = "pip install 'ftsweep[onnx]'"
OPSET = 18


def require() -> Any:
    """onnxruntime, or a UserError saying how to install the extra."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"ONNX needs onnx, onnxscript and onnxruntime: {INSTALL}") from None
    return onnxruntime


class _Deployed(nn.Module):
    """uint8 images in; logits and probabilities out (what model.onnx computes)."""

    def __init__(self, network: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.network = network
        self.temperature = temperature
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        batch = (images.to(torch.float32) / 255.0 - mean) / std
        logits = self.network(batch)
        return logits, (logits / self.temperature).softmax(dim=1)


def write_onnx(
    network: nn.Module, model_dir: Path, out_dir: Path, images: torch.Tensor | None
) -> float:
    """Converts the network of an exported PyTorch folder (``model_dir``) into an
    ONNX folder at ``out_dir``; returns the largest difference of probabilities
    measured on ``images`` (uint8 NCHW; None: 16 drawn ones)."""
    ort = require()
    description = json.loads((model_dir / MODEL_FILE).read_text())
    deployed = _Deployed(network, float(description.get("temperature", 1.0))).eval()
    size = int(description["image_size"])
    if images is None or not len(images):
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (16, 3, size, size), dtype=torch.uint8, generator=generator)
    images = images[:64]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ONNX_FILE
        _export(deployed, images[:2], path, description["backbone"])
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        _, ort_probs = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            _, torch_probs = deployed(images)
        difference = float((torch.from_numpy(ort_probs) - torch_probs).abs().max())
        same_top1 = bool((torch.from_numpy(ort_probs).argmax(1) == torch_probs.argmax(1)).all())
        if difference > TOLERANCE or not same_top1:
            raise UserError(
                f"the ONNX export of {_family(description['backbone'])} does not match PyTorch on "
                f"{len(images)} images (largest difference of probabilities {difference:.2e}, "
                f"allowed {TOLERANCE:g}; top-1 classes {'equal' if same_top1 else 'differ'}); "
                "keep the PyTorch folder (ftsweep export without --format onnx)"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out_dir / ONNX_FILE)
    description |= {
        "format": "onnx",
        "onnx": {
            "input": {"name": "images", "dtype": "uint8", "shape": ["batch", 3, size, size]},
            "outputs": ["logits", "probabilities"],
            "opset": OPSET,
            "checked_on": len(images),
            "largest_difference": difference,
        },
    }
    (out_dir / MODEL_FILE).write_text(json.dumps(description, indent=1) + "\n")
    if (model_dir / METRICS_FILE).is_file():
        shutil.copyfile(model_dir / METRICS_FILE, out_dir / METRICS_FILE)
        write_card(out_dir)
    return difference


def _export(deployed: nn.Module, example: torch.Tensor, path: Path, backbone: str) -> None:
    import warnings

    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                deployed,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["logits", "probabilities"],
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                dynamo=True,
                external_data=False,  # one file (a model under 2 GB, protobuf's limit)
                verbose=False,
            )
    except ImportError as exc:  # onnx or onnxscript missing
        raise UserError(f"ONNX export needs onnx and onnxscript ({exc}): {INSTALL}") from None
    except Exception as exc:  # an operator ONNX lacks, a shape torch.export cannot trace
        first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
        raise UserError(
            f"{_family(backbone)} cannot be exported to ONNX ({type(exc).__name__}: {first}); "
            "keep the PyTorch folder (ftsweep export without --format onnx)"
        ) from None


def _family(backbone: str) -> str:
    """The backbone with its family, as errors name it: "swin_t (Swin family)"."""
    from trainables.backbones import family_of

    family = family_of(backbone)
    return f"{backbone} ({family.title} family)" if family is not None else backbone


class OnnxModel(Predictor):
    """An ONNX model folder run through onnxruntime: ``.classes``, ``.predict``,
    ``.predict_proba`` and ``.logits`` as load_model's PyTorch models have."""

    def __init__(
        self, model_dir: Path, classes: list[str], image_size: int, temperature: float = 1.0
    ) -> None:
        ort = require()
        self.session = ort.InferenceSession(
            str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"]
        )
        self.classes = classes
        self.image_size = image_size
        self.temperature = temperature

    def batch_logits(self, batch: torch.Tensor) -> torch.Tensor:
        logits, _ = self.session.run(None, {"images": batch.contiguous().numpy()})
        return torch.from_numpy(logits)

    def to(self, device: Any) -> OnnxModel:  # onnxruntime's CPU provider: one device
        return self

    def eval(self) -> OnnxModel:
        return self
