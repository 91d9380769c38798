"""What every loaded model offers (PyTorch, ONNX, ensemble): ``predict``,
``predict_proba`` and ``logits`` on PIL images, tensors or paths, with the
model's temperature and optional test-time augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from search.model.tta import views
from trainables.data import load_image, prepare_image


class Predictor:
    """Prediction on top of one method, ``batch_logits`` (uint8 NCHW -> raw logits)."""

    classes: list[str]
    image_size: int
    temperature: float = 1.0  # model.json's, fitted on the validation split at export

    def batch_logits(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, images: Any, *, batch_size: int = 64) -> torch.Tensor:
        """Raw logits (N x classes, before the temperature) of images."""
        return self._batched(images, batch_size, self.batch_logits)

    def predict_proba(
        self, images: Any, *, batch_size: int = 64, tta: str | None = None
    ) -> torch.Tensor:
        """Class probabilities (N x classes): softmax(logits / temperature).

        Images are PIL images, uint8 or float tensors (CHW, or a NCHW batch) or
        paths, decoded with the preprocessing the model was trained with and
        run ``batch_size`` at a time on the model's device. ``tta`` ("flip" or
        "crops", search/model/tta.py) averages the probabilities of each
        image's views.
        """
        return self._batched(images, batch_size, lambda batch: self.batch_proba(batch, tta))

    def predict(self, images: Any, *, batch_size: int = 64, tta: str | None = None) -> list[str]:
        """The most likely class name of each image."""
        probabilities = self.predict_proba(images, batch_size=batch_size, tta=tta)
        return [self.classes[i] for i in probabilities.argmax(dim=1).tolist()]

    def batch_proba(self, batch: torch.Tensor, tta: str | None = None) -> torch.Tensor:
        """Probabilities of one prepared uint8 batch, averaged over its views."""
        probabilities = [
            (self.batch_logits(view).double() / self.temperature).softmax(dim=1).float()
            for view in (views(batch, tta) if tta else [batch])
        ]
        return torch.stack(probabilities).mean(dim=0)

    def prepare(self, image: Any) -> torch.Tensor:
        """One image -> the uint8 CHW tensor the model takes (resize, centre crop)."""
        return prepare(image, self.image_size)

    def _batched(self, images: Any, batch_size: int, run: Any) -> torch.Tensor:
        items = as_items(images)
        outputs = []
        for start in range(0, len(items), batch_size):
            outputs.append(
                run(torch.stack([self.prepare(im) for im in items[start : start + batch_size]]))
            )
        return torch.cat(outputs) if outputs else torch.empty(0, len(self.classes))


def as_items(images: Any) -> Any:
    """A batch tensor, a list or one image, as a sequence of images."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, list | tuple):
        return images
    return [images]


def prepare(image: Any, image_size: int) -> torch.Tensor:
    """One image (PIL, tensor or path) -> the uint8 CHW tensor a model takes
    (resized on the shorter side, centre-cropped), as in training."""
    if isinstance(image, str | Path):
        return load_image(Path(image), image_size)
    return prepare_image(image, image_size)
