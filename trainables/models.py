"""The classifier a trial trains: a torchvision backbone, a new head, frozen stages.

``build_model`` takes the model group of the hyperparameters (hparams.py).
A backbone's family (backbones.py) says where its classifier is and how it
splits into stages counted from the input (stages.py). Every backbone
parameter belongs to exactly one stage, so ``frozen_depth: k`` freezes the
first k stages and ``all`` (or any k at or above the count) freezes the whole
backbone: a linear probe.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from trainables import timm_backbones
from trainables.augment import MEAN, STD
from trainables.backbones import Family, builder_kwargs, input_size, known
from trainables.stages import Stage
from trainables.timm_backbones import is_timm
from trainables.weights import load_backbone

log = logging.getLogger(__name__)

ALL = "all"  # frozen_depth that freezes every stage
AUX_WEIGHT = 0.4  # Inception V3's auxiliary loss weight (Szegedy et al. 2016)


class AuxOutputs(NamedTuple):
    """What a network with an auxiliary classifier returns in training."""

    logits: torch.Tensor
    aux: torch.Tensor


class Classifier(nn.Module):
    """A backbone (classifier removed) followed by a new head.

    Frozen stages stay in eval mode whatever ``train()`` says, so their
    BatchNorm running statistics never change (and their dropout is off).
    Images smaller than the backbone's minimum are resized up to it.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        stages: list[Stage],
        *,
        frozen_depth: int = 0,
        resize_to: int | None = None,
        head_prefixes: tuple[str, ...] = ("head.",),
        input_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.resize_to = resize_to
        self.head_prefixes = head_prefixes  # parameters trained at the head's learning rate
        self.stage_count = len(stages)
        self.frozen_depth = min(frozen_depth, len(stages))
        # Tuples are not registered as submodules (no duplicate state-dict keys).
        self._frozen = tuple(_modules(stages[: self.frozen_depth]))
        self._frozen_params = tuple(_parameters(stages[: self.frozen_depth]))
        for param in self._frozen_params:
            param.requires_grad_(False)
        # Images come ImageNet-normalised; a backbone pretrained with other
        # statistics (a timm model's own mean and std) gets its own: x * a + b.
        # Not in the state dict: the backbone's name says them.
        self.restandardise = input_stats is not None and input_stats != (MEAN, STD)
        if input_stats is not None and self.restandardise:
            mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in input_stats)
            imagenet_mean, imagenet_std = (torch.tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))
            self.register_buffer("input_scale", imagenet_std / std, persistent=False)
            self.register_buffer("input_shift", (imagenet_mean - mean) / std, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor | AuxOutputs:
        if self.restandardise:
            scale, shift = self.get_buffer("input_scale"), self.get_buffer("input_shift")
            images = images * scale.to(images.dtype) + shift.to(images.dtype)
        if self.resize_to is not None and images.shape[-1] != self.resize_to:
            images = F.interpolate(
                images, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False
            )
        features = self.backbone(images)
        if isinstance(features, tuple):  # Inception V3 in training: (features, aux logits)
            return AuxOutputs(self.head(features[0]), features[1])
        return self.head(features)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def frozen_parameters(self) -> tuple[nn.Parameter, ...]:
        return self._frozen_params

    def unfreeze(self) -> None:
        """Lets the frozen stages train from now on (``unfreeze_at``)."""
        for param in self._frozen_params:
            param.requires_grad_(True)
        self._frozen = ()
        self.frozen_depth = 0
        self.train(self.training)


def _modules(stages: list[Stage]) -> Iterator[nn.Module]:
    for stage in stages:
        yield from (part for part in stage if isinstance(part, nn.Module))


def _parameters(stages: list[Stage]) -> Iterator[nn.Parameter]:
    for stage in stages:
        for part in stage:
            yield from [part] if isinstance(part, nn.Parameter) else part.parameters()


def build_model(
    backbone: str,
    num_classes: int,
    *,
    weights: str = "none",
    frozen_depth: int | str = 0,
    head_hidden: int = 0,
    head_dropout: float = 0.0,
    stochastic_depth: float | None = None,
    image_size: int = 224,
    training: bool = True,
) -> Classifier:
    """Builds a torchvision backbone with a new head and its first stages frozen.

    Args:
        frozen_depth: stages frozen from the input; ``"all"`` or a number at
            or above the backbone's stage count freezes the whole backbone
            (more than the count is clamped, with a warning).
        stochastic_depth: the chance that a residual block is skipped in
            training (torchvision's ``stochastic_depth_prob``); None keeps the
            family's own default. Families without it refuse a value.
        training: False builds the network for inference only (no auxiliary
            classifier), as an exported model is loaded.
    """
    if is_timm(backbone):
        return _timm_model(
            backbone, num_classes, weights, frozen_depth, head_hidden, head_dropout,
            stochastic_depth, image_size,
        )  # fmt: skip
    family = known(backbone)
    size = input_size(backbone, image_size)
    # Inception V3's auxiliary classifier needs 299 px, and is useless once
    # the stages it feeds back into (up to Mixed_6e, the third) are frozen.
    aux = (
        training
        and family.aux_min_side is not None
        and size >= family.aux_min_side
        and frozen_depth != ALL
        and int(frozen_depth) < family.aux_feeds
    )
    kwargs = builder_kwargs(backbone, size, aux, stochastic_depth=stochastic_depth)
    model = load_backbone(backbone, weights, kwargs, size)
    in_features = _remove_classifier(model, family, num_classes)
    head = build_head(in_features, num_classes, head_hidden, head_dropout)
    stages = family.stages(model)
    return Classifier(
        model,
        head,
        stages,
        frozen_depth=_depth(frozen_depth, stages, backbone),
        resize_to=size if size != image_size else None,
        head_prefixes=("head.", "backbone.AuxLogits.") if aux else ("head.",),
    )


def _timm_model(
    backbone: str,
    num_classes: int,
    weights: str,
    frozen_depth: int | str,
    head_hidden: int,
    head_dropout: float,
    stochastic_depth: float | None,
    image_size: int,
) -> Classifier:
    """build_model for a timm backbone (trainables/timm_backbones.py)."""
    size = input_size(backbone, image_size)
    model, width = timm_backbones.build(backbone, weights, size, stochastic_depth)
    stages = timm_backbones.stages(model)
    return Classifier(
        model,
        build_head(width, num_classes, head_hidden, head_dropout),
        stages,
        frozen_depth=_depth(frozen_depth, stages, backbone),
        resize_to=size if size != image_size else None,
        input_stats=timm_backbones.input_stats(backbone),
    )


def _depth(frozen_depth: int | str, stages: list[Stage], backbone: str) -> int:
    depth = len(stages) if frozen_depth == ALL else int(frozen_depth)
    if depth > len(stages):
        log.warning(
            "frozen_depth %d > %d stages of %s: clamped to %d (the whole backbone)",
            depth,
            len(stages),
            backbone,
            len(stages),
        )
    return depth


def inference_network(group: dict[str, Any], num_classes: int, image_size: int) -> Classifier:
    """The network of a trained model for inference: built from its model group
    (hparams.MODEL), without pretrained weights (the trained ones are loaded
    next), nothing frozen, no auxiliary classifier."""
    return build_model(
        num_classes=num_classes,
        image_size=image_size,
        training=False,
        **{**group, "weights": "none", "frozen_depth": 0},
    )


def build_head(in_features: int, num_classes: int, hidden: int, dropout: float) -> nn.Module:
    if hidden == 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def _remove_classifier(model: nn.Module, family: Family, num_classes: int) -> int:
    """Puts an identity where the classifier was; returns the width of the features."""
    parent_name, _, attr = family.classifier.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    if family.conv_classifier:  # a 1x1 convolution classifier: keep only the pooling
        conv = next(m for m in old.modules() if isinstance(m, nn.Conv2d))
        setattr(parent, attr, nn.AdaptiveAvgPool2d(1))
        return int(conv.in_channels)
    linear = next(m for m in old.modules() if isinstance(m, nn.Linear))
    setattr(parent, attr, nn.Identity())
    aux = getattr(model, "AuxLogits", None)
    if aux is not None:  # Inception V3's auxiliary classifier predicts our classes too
        aux.fc = nn.Linear(aux.fc.in_features, num_classes)
    return int(linear.in_features)
