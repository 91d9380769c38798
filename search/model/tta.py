"""Test-time augmentation: each image seen as a few views, their probabilities averaged.

``flip``: the image and its mirror (2 views). ``crops``: those two and the
four corner crops of 7/8 of the image, scaled back to the model's size (6
views). The views are made on the uint8 batch, so the same code serves the
PyTorch and the ONNX models, and each view runs batched on the model's device.
"""

from __future__ import annotations

import torch
from torch.nn import functional

TTA_CHOICES = ("flip", "crops")
CROP = 7 / 8


def views(batch: torch.Tensor, kind: str) -> list[torch.Tensor]:
    """The views of a uint8 NCHW batch: the batch itself first."""
    if kind not in TTA_CHOICES:
        raise ValueError(f"test-time augmentation is one of {TTA_CHOICES}, not {kind!r}")
    result = [batch, batch.flip(-1)]
    if kind == "crops":
        size = batch.shape[-1]
        side = max(1, round(size * CROP))
        for top, left in ((0, 0), (0, size - side), (size - side, 0), (size - side, size - side)):
            crop = batch[..., top : top + side, left : left + side].float()
            scaled = functional.interpolate(
                crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
            result.append(scaled.round().clamp(0, 255).to(torch.uint8))
    return result
