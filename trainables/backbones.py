"""The torchvision backbone families: a registry with each family's quirks as fields.

Every image-classification model that torchvision lists belongs to one family
here. A family says which layer is the classifier that our head replaces, how
the backbone splits into stages counted from the input (stages.py), and what
its builder needs: an input-size rule, keyword arguments, an auxiliary
classifier, stochastic depth. ``python -m trainables.backbones`` prints the
table of docs/backbones.md.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn

from trainables import timm_backbones
from trainables.errors import UserError
from trainables.stages import (
    Stage,
    _convnext_stages,
    _densenet_stages,
    _features_stages,
    _googlenet_stages,
    _inception_stages,
    _maxvit_stages,
    _mnasnet_stages,
    _mobilenet_v3_stages,
    _regnet_stages,
    _resnet_stages,
    _shufflenet_stages,
    _squeezenet_stages,
    _swin_stages,
    _vgg_stages,
    _vit_stages,
)
from trainables.timm_backbones import is_timm

# The pretrained Inception V3 and GoogLeNet weights expect their own normalisation.
TRANSFORM_INPUT = (("transform_input", True), ("init_weights", True))


# Model hyperparameters that are arguments of torchvision's builders:
# name -> (the builder's argument, the Family field that says a family takes it).
BUILDER_OPTIONS = {"stochastic_depth": ("stochastic_depth_prob", "stochastic_depth")}


@dataclass(frozen=True)
class Family:
    """How to fine-tune one torchvision family."""

    title: str  # as the docs name it
    pattern: str  # regular expression over torchvision model names
    classifier: str  # dotted path of the layer our head replaces
    stages: Callable[[Any], list[Stage]]  # torchvision models are typed loosely
    layout: str  # the stages in words, for docs/backbones.md
    count: int | None = None  # stages of every member, where building one to count is costly
    # Input size: at least min_side (default: the weights' own minimum), a
    # multiple of side_multiple, or of the patch size that ends the name (ViT);
    # size_kwarg: the builder's argument for it (ViT's image_size, MaxViT's input_size).
    min_side: int | None = None
    side_multiple: int | None = None
    patch_in_name: bool = False
    size_kwarg: str | None = None
    size_as_pair: bool = False  # the size given as (side, side)
    builder_kwargs: tuple[tuple[str, Any], ...] = ()
    conv_classifier: bool = False  # a 1x1 convolution classifier (SqueezeNet)
    aux_logits: bool = False  # the builder takes aux_logits
    aux_min_side: int | None = None  # trains an auxiliary classifier from this input side
    aux_feeds: int = 0  # stages the auxiliary classifier feeds back into
    stochastic_depth: bool = False  # the builder takes stochastic_depth_prob


FAMILIES: dict[str, Family] = {
    f.title: f
    for f in (
        Family("ResNet", r"resnet\d+$", "fc", _resnet_stages, "stem (conv1, bn1), layer1-4"),
        Family("ResNeXt", r"resnext", "fc", _resnet_stages, "stem (conv1, bn1), layer1-4"),
        Family("Wide ResNet", r"wide_resnet", "fc", _resnet_stages, "stem (conv1, bn1), layer1-4"),
        Family(
            "MobileNet V2",
            r"mobilenet_v2$",
            "classifier",
            _features_stages,
            "stem (features[0]), then one stage per resolution (a downsampling block opens one)",
        ),
        Family(
            "MobileNet V3",
            r"mobilenet_v3_",
            "classifier.3",
            _mobilenet_v3_stages,
            "stem, one stage per resolution; the last includes the pre-logits layer",
        ),
        Family(
            "EfficientNet",
            r"efficientnet_b\d$",
            "classifier",
            _features_stages,
            "stem (features[0]), then one stage per resolution",
            stochastic_depth=True,
        ),
        Family(
            "EfficientNet V2",
            r"efficientnet_v2_",
            "classifier",
            _features_stages,
            "stem (features[0]), then one stage per resolution",
            stochastic_depth=True,
        ),
        Family(
            "ConvNeXt",
            r"convnext_",
            "classifier.2",
            _convnext_stages,
            "stem, then the four stages (each with the downsampling before it); final norm last",
            stochastic_depth=True,
        ),
        # RegNet computes its widths with tensors, so it cannot be built on the meta device.
        Family("RegNet", r"regnet_", "fc", _regnet_stages, "stem, block1-4", count=5),
        Family(
            "DenseNet",
            r"densenet",
            "classifier",
            _densenet_stages,
            "stem (conv0 ... pool0), dense block + transition 1-3, dense block 4 + norm5",
        ),
        Family(
            "ShuffleNet V2",
            r"shufflenet_v2_",
            "fc",
            _shufflenet_stages,
            "stem (conv1), stage2, stage3, stage4 + conv5",
        ),
        Family(
            "SqueezeNet",
            r"squeezenet",
            "classifier",
            _squeezenet_stages,
            "blocks of Fire modules ending at each max-pool; the first holds the stem",
            conv_classifier=True,
        ),
        Family(
            "MNASNet",
            r"mnasnet",
            "classifier",
            _mnasnet_stages,
            "stem (layers 0-7), then one stage per resolution; the last includes the 1x1 conv",
        ),
        Family(
            "GoogLeNet",
            r"googlenet$",
            "fc",
            _googlenet_stages,
            "stem (conv1 ... maxpool2), inception3, inception4, inception5",
            aux_logits=True,
            builder_kwargs=TRANSFORM_INPUT,
        ),
        Family(
            "Inception V3",
            r"inception_v3$",
            "fc",
            _inception_stages,
            "stem (Conv2d_1a ... maxpool2), Mixed_5, Mixed_6, Mixed_7",
            aux_logits=True,
            builder_kwargs=TRANSFORM_INPUT,
            aux_min_side=299,
            aux_feeds=3,
        ),
        Family(
            "VGG",
            r"vgg\d+",
            "classifier.6",
            _vgg_stages,
            "five convolution blocks ending at each max-pool, then the two pretrained FC layers",
        ),
        Family(
            "AlexNet",
            r"alexnet$",
            "classifier.6",
            _vgg_stages,
            "three convolution blocks ending at each max-pool, then the two pretrained FC layers",
        ),
        Family(
            "ViT",
            r"vit_",
            "heads",
            _vit_stages,
            "patch embedding + class token + position embedding, then encoder layers in 4 groups",
            patch_in_name=True,
            size_kwarg="image_size",
        ),
        Family(
            "Swin",
            r"swin_[tsb]$",
            "head",
            _swin_stages,
            "patch embedding, then the four stages (patch merging opens each); final norm last",
            min_side=32,
            stochastic_depth=True,
        ),
        Family(
            "Swin V2",
            r"swin_v2_",
            "head",
            _swin_stages,
            "patch embedding, then the four stages (patch merging opens each); final norm last",
            min_side=32,
            stochastic_depth=True,
        ),
        Family(
            "MaxViT",
            r"maxvit_",
            "classifier.5",
            _maxvit_stages,
            "stem, then the four blocks; the last includes the pre-logits layers",
            min_side=224,
            side_multiple=224,
            size_kwarg="input_size",
            size_as_pair=True,
            stochastic_depth=True,
        ),
    )
}


def family_of(backbone: str) -> Family | None:
    for family in FAMILIES.values():
        if re.match(family.pattern, backbone):
            return family
    return None


def supported_backbones() -> list[str]:
    """Every torchvision image-classification model that has a family here."""
    return [n for n in sorted(_torchvision_models()) if family_of(n) is not None]


def input_size(backbone: str, image_size: int) -> int:
    """The side the network is built for and fed at, given the space's ``image_size``.

    Most families take any size at or above their minimum (smaller images are
    resized up to it). ViT needs a multiple of its patch size (its position
    embeddings are interpolated to that grid), MaxViT a multiple of 224 (its
    7x7 attention partitions at stride 32), Swin at least 32.
    """
    if is_timm(backbone):
        return timm_backbones.input_side(backbone, image_size)
    family = known(backbone)
    multiple = family.side_multiple
    if family.patch_in_name:
        multiple = int(backbone.rsplit("_", 1)[-1])
    minimum = family.min_side or multiple
    if minimum is None:
        minimum = torchvision.models.get_model_weights(backbone).DEFAULT.meta["min_size"][0]
    side = max(image_size, int(minimum))
    return math.ceil(side / multiple) * multiple if multiple else side


def stage_count(backbone: str, image_size: int = 224) -> int:
    """How many stages ``frozen_depth`` counts for this backbone."""
    if is_timm(backbone):
        model, _ = timm_backbones.build(backbone, "none", input_size(backbone, image_size))
        return len(timm_backbones.stages(model))
    family = known(backbone)
    if family.count is not None:
        return family.count
    return len(family.stages(skeleton(backbone, input_size(backbone, image_size))))


def stage_table() -> list[tuple[str, str, str, str]]:
    """(family, stage count, stages, models) rows for docs/backbones.md."""
    rows = []
    names = supported_backbones()
    for family in FAMILIES.values():
        members = [n for n in names if family_of(n) is family]
        counts = sorted({stage_count(n) for n in members})
        count = str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"
        rows.append((family.title, count, family.layout, ", ".join(members)))
    return rows


def known(backbone: str) -> Family:
    family = family_of(backbone)
    if family is None or backbone not in _torchvision_models():
        raise UserError(
            f"unknown backbone '{backbone}'; supported: {', '.join(supported_backbones())}"
        )
    return family


@functools.cache
def _torchvision_models() -> frozenset[str]:
    return frozenset(torchvision.models.list_models(module=torchvision.models))


def builder_kwargs(backbone: str, size: int, aux: bool, **options: Any) -> dict[str, Any]:
    """torchvision's builder arguments for this backbone at this input side.

    ``options``: model hyperparameters that are arguments of torchvision's
    builder (BUILDER_OPTIONS); None leaves the family's default. A family
    that lacks one refuses a value with a clear error. A timm model takes its
    options when it is built (timm_backbones.build).
    """
    if is_timm(backbone):
        timm_backbones.check(backbone)
        return {}
    family = known(backbone)
    kwargs: dict[str, Any] = dict(family.builder_kwargs)
    if family.size_kwarg:
        kwargs[family.size_kwarg] = (size, size) if family.size_as_pair else size
    if family.aux_logits:
        kwargs["aux_logits"] = aux
    for name, value in options.items():
        if value is None:
            continue
        argument, supported = BUILDER_OPTIONS[name]
        if not getattr(family, supported):
            takes = ", ".join(f.title for f in FAMILIES.values() if getattr(f, supported))
            raise UserError(
                f"{name}: {backbone} ({family.title}) has no {argument}; families that "
                f"do: {takes}. Set {name} under those backbones' options only"
            )
        kwargs[argument] = value
    return kwargs


def skeleton(backbone: str, size: int) -> nn.Module:
    """The architecture without memory (meta tensors): for counting stages."""
    with torch.device("meta"):
        return torchvision.models.get_model(
            backbone, weights=None, **builder_kwargs(backbone, size, aux=False)
        )


if __name__ == "__main__":  # the table of docs/backbones.md
    print("| family | stages | stages, from the input | models |")
    print("| --- | --- | --- | --- |")
    for row in stage_table():
        print("| " + " | ".join(row) + " |")
