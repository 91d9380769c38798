"""Augmentation presets on uint8 image tensors, and normalisation."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

# torchvision's ImageNet statistics: every pretrained backbone expects them.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def build_augmentation(name: str, image_size: int) -> v2.Transform | None:
    """The per-image training transform of a preset (uint8 CHW in, uint8 out)."""
    crop = v2.RandomResizedCrop(image_size, scale=(0.6, 1.0), antialias=True)
    flip = v2.RandomHorizontalFlip()
    presets: dict[str, list[v2.Transform]] = {
        "none": [],
        "light": [crop, flip],
        "strong": [
            v2.RandomResizedCrop(image_size, scale=(0.3, 1.0), antialias=True),
            flip,
            v2.ColorJitter(0.4, 0.4, 0.4, 0.05),
            v2.RandomErasing(p=0.25, value=0),
        ],
        "randaugment": [crop, flip, v2.RandAugment()],
        "trivialaugment": [crop, flip, v2.TrivialAugmentWide()],
    }
    steps = presets[name]
    return v2.Compose(steps) if steps else None


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float NCHW with ImageNet statistics (on the images' device)."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images.float().div_(255.0) - mean) / std


class TensorImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Decoded uint8 images with an optional per-image transform."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform | None = None
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]
