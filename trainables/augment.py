"""Augmentation presets applied to whole uint8 batches on the trial's device, and normalisation.

Each preset is torchvision's per-image recipe (docs/search-space.md lists
them); its random parameters are drawn per image, but the work is done for
the batch at once, on the GPU when the trial has one:

- ``light``: RandomResizedCrop(scale 0.6-1, ratio 3/4-4/3) and a horizontal
  flip (p 0.5). The crop is resampled bilinearly straight from the cached
  image (one ``grid_sample`` for the batch, the flip folded in).
- ``strong``: the crop at scale 0.3-1, the flip, ColorJitter(brightness 0.4,
  contrast 0.4, saturation 0.4, hue 0.05) with the four in an order drawn
  per batch (per image in torchvision), and RandomErasing(p 0.25, scale
  0.02-0.33, ratio 0.3-3.3, black).
- ``randaugment`` / ``trivialaugment``: light's crop and flip for the batch,
  then torchvision's RandAugment (2 ops, magnitude 9) / TrivialAugmentWide
  image by image on the device: their operations differ per image.
- ``none``: the images as they are.

The cached images are already at the trial's size, so the crop only ever
enlarges, where torchvision's antialiasing changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as nnf
from torchvision.transforms import v2

# torchvision's ImageNet statistics: every pretrained backbone expects them.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights

RATIO = (3 / 4, 4 / 3)
CROP_SCALE = {"light": (0.6, 1.0), "strong": (0.3, 1.0)}
JITTER = (0.4, 0.4, 0.4, 0.05)  # brightness, contrast, saturation, hue
ERASE_P, ERASE_SCALE, ERASE_RATIO = 0.25, (0.02, 0.33), (0.3, 3.3)
PRESETS = ("none", "light", "strong", "randaugment", "trivialaugment")

Augment = Callable[[torch.Tensor], torch.Tensor]


def build_augmentation(name: str, image_size: int) -> Augment:
    """The preset as a function: uint8 NCHW batch -> float NCHW in [0, 1], same device."""
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation {name!r}")
    per_image: v2.Transform | None = None
    if name == "randaugment":
        per_image = v2.RandAugment()
    elif name == "trivialaugment":
        per_image = v2.TrivialAugmentWide()

    def augment(images: torch.Tensor) -> torch.Tensor:
        batch = images.float().div_(255.0)
        if name == "none":
            return batch
        scale = CROP_SCALE.get(name, CROP_SCALE["light"])
        height, width = batch.shape[-2:]
        boxes = crop_boxes(len(batch), height, width, scale, device=batch.device)
        flips = torch.rand(len(batch), device=batch.device) < 0.5
        batch = resized_crop(batch, boxes, image_size, flips)
        if name == "strong":
            batch = color_jitter(batch, *jitter_factors(len(batch), batch.device))
            batch = erase(batch, erase_boxes(batch))
        if per_image is not None:
            batch = torch.stack([per_image(image) for image in batch])
        return batch

    return augment


def crop_boxes(
    count: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = RATIO,
    device: torch.device | None = None,
) -> torch.Tensor:
    """RandomResizedCrop's boxes, torchvision's algorithm per image: (top, left, h, w) rows.

    Ten tries of an area and a log-uniform aspect ratio; the first that fits
    is placed uniformly; with none, the centre crop within the ratio range.
    """
    area = height * width
    tries = 10
    target = area * torch.empty(count, tries, device=device).uniform_(*scale)
    aspect = torch.exp(torch.empty(count, tries, device=device).uniform_(*map(math.log, ratio)))
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(dim=1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    found = fits.any(dim=1)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    top = (torch.rand(count, device=device) * (height - h + 1)).floor().clamp_(max=height - h)
    left = (torch.rand(count, device=device) * (width - w + 1)).floor().clamp_(max=width - w)
    top = torch.where(found, top, ((height - h) / 2).round())
    left = torch.where(found, left, ((width - w) / 2).round())
    return torch.stack([top, left, h, w], dim=1).long()


def resized_crop(
    images: torch.Tensor, boxes: torch.Tensor, size: int, flips: torch.Tensor | None = None
) -> torch.Tensor:
    """Crops each image to its box and resizes it to ``size``, bilinearly, flipped where asked.

    Samples where ``F.resized_crop`` (bilinear) does, clamped inside the box.
    """
    height, width = images.shape[-2:]
    boxes = boxes.to(images.device, torch.float32)
    top, left, h, w = boxes.unbind(dim=1)
    steps = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size
    ys = (top[:, None] + steps * h[:, None] - 0.5).clamp(top[:, None], (top + h - 1)[:, None])
    xs = (left[:, None] + steps * w[:, None] - 0.5).clamp(left[:, None], (left + w - 1)[:, None])
    if flips is not None:
        xs = torch.where(flips[:, None], xs.flip(1), xs)
    # grid_sample's coordinates (align_corners=False): pixel centre k at (2k + 1) / n - 1
    gx = (2 * xs + 1) / width - 1
    gy = (2 * ys + 1) / height - 1
    grid = torch.stack(
        [gx[:, None, :].expand(-1, size, -1), gy[:, :, None].expand(-1, -1, size)], dim=-1
    )
    return nnf.grid_sample(
        images, grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def jitter_factors(
    count: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """ColorJitter's per-image factors (brightness, contrast, saturation, hue) and an order."""
    b, c, s, h = JITTER

    def draw(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(count, device=device).uniform_(lo, hi)

    order = torch.randperm(4).tolist()
    return draw(1 - b, 1 + b), draw(1 - c, 1 + c), draw(1 - s, 1 + s), draw(-h, h), order


def color_jitter(
    images: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    hue: torch.Tensor,
    order: list[int],
) -> torch.Tensor:
    """torchvision's adjust_brightness/contrast/saturation/hue with a factor per image."""

    def per_image(factor: torch.Tensor) -> torch.Tensor:
        return factor.view(-1, 1, 1, 1)

    for op in order:
        if op == 0:
            images = (images * per_image(brightness)).clamp_(0, 1)
        elif op == 1:
            mean = grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
            images = _blend(images, mean, per_image(contrast))
        elif op == 2:
            images = _blend(images, grayscale(images), per_image(saturation))
        else:
            images = shift_hue(images, hue)
    return images


def grayscale(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(GRAY, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def shift_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotates each image's hue by its ``shift`` (a fraction of the circle), via HSV."""
    r, g, b = images.unbind(dim=1)
    value, _ = images.max(dim=1)
    low, _ = images.min(dim=1)
    chroma = value - low
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sat = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)), 0)
    hue = torch.where(
        value == r,
        ((g - b) / safe) % 6,
        torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4),
    )
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue))
    hue = (hue + shift.view(-1, 1, 1)) % 1.0
    channels = []
    for n in (5, 3, 1):  # r, g, b: v - v s max(0, min(k, 4 - k, 1)), k = (n + 6h) mod 6
        k = (n + hue * 6) % 6
        channels.append(value - value * sat * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(channels, dim=1)


def erase_boxes(images: torch.Tensor) -> torch.Tensor:
    """RandomErasing's boxes per image, (top, left, h, w); h = 0 where nothing is erased."""
    count, _, height, width = images.shape
    device = images.device
    area = height * width
    target = area * torch.empty(count, 10, device=device).uniform_(*ERASE_SCALE)
    aspect = torch.exp(torch.empty(count, 10, device=device).uniform_(*map(math.log, ERASE_RATIO)))
    h = torch.sqrt(target * aspect).round()
    w = torch.sqrt(target / aspect).round()
    fits = (h < height) & (w < width)
    first = fits.float().argmax(dim=1, keepdim=True)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    chosen = (torch.rand(count, device=device) < ERASE_P) & fits.any(dim=1)
    top = (torch.rand(count, device=device) * (height - h + 1)).floor()
    left = (torch.rand(count, device=device) * (width - w + 1)).floor()
    h = torch.where(chosen, h, torch.zeros_like(h))
    return torch.stack([top, left, h, w], dim=1).long()


def erase(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Blacks out each image's box (rows with h = 0 are left as they are)."""
    height, width = images.shape[-2:]
    top, left, h, w = boxes.to(images.device).unbind(dim=1)
    ys = torch.arange(height, device=images.device).view(1, -1, 1)
    xs = torch.arange(width, device=images.device).view(1, 1, -1)
    inside = (
        (ys >= top.view(-1, 1, 1))
        & (ys < (top + h).view(-1, 1, 1))
        & (xs >= left.view(-1, 1, 1))
        & (xs < (left + w).view(-1, 1, 1))
    )
    return images.masked_fill(inside[:, None], 0.0)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float NCHW with ImageNet statistics (on the images' device)."""
    return normalize_float(images.float().div_(255.0))


def normalize_float(images: torch.Tensor) -> torch.Tensor:
    """Float NCHW in [0, 1] -> ImageNet-normalised, in place."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return images.sub_(mean).div_(std)


def _blend(images: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return (ratio * images + (1 - ratio) * other).clamp_(0, 1)


def build_mix(
    num_classes: int, mixup_alpha: float, cutmix_alpha: float
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """torchvision's batch MixUp / CutMix (one of the two per batch when both are on)."""
    mixes: list[v2.Transform] = []
    if mixup_alpha > 0:
        mixes.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        mixes.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


Mix = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Regularisation:
    """What a trial does to its batches and loss beyond plain cross-entropy."""

    augment: Augment  # per-image augmentation, batched on the device
    mix: Mix | None  # MixUp / CutMix over a batch, or None
    loss: nn.Module  # cross-entropy, with label smoothing and class weights


def build_regularisation(
    class_counts: torch.Tensor,
    image_size: int,
    *,
    augmentation: str = "light",
    label_smoothing: float = 0.0,
    class_weights: str = "none",
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
) -> Regularisation:
    """The regularisation group of a trial's hyperparameters, built.

    ``class_counts``: images per class in the training split (the class
    weights come from them).
    """
    return Regularisation(
        augment=build_augmentation(augmentation, image_size),
        mix=build_mix(len(class_counts), mixup_alpha, cutmix_alpha),
        loss=nn.CrossEntropyLoss(
            weight=weights_of(class_counts, class_weights), label_smoothing=label_smoothing
        ),
    )


def weights_of(class_counts: torch.Tensor, kind: str) -> torch.Tensor | None:
    """Class weights ``1/n`` (inverse) or ``1/sqrt(n)`` (sqrt_inverse), scaled so
    that the training images' weights average 1 (inverse: scikit-learn's
    "balanced", ``N / (K n)``); None for ``none``. A class without training
    images gets weight 0."""
    if kind == "none":
        return None
    counts = class_counts.double()
    power = {"inverse": 1.0, "sqrt_inverse": 0.5}[kind]
    raw = torch.where(counts > 0, counts.clamp_min(1) ** -power, torch.zeros_like(counts))
    return (raw * counts.sum() / (raw * counts).sum()).float()
