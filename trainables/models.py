"""Backbones from torchvision, their stages, a new head, and freezing.

Every image-classification model that torchvision lists belongs to one family
here. A family says which layer is the classifier that our head replaces and
how the backbone splits into stages counted from the input: the stem, then the
family's natural blocks. Every backbone parameter belongs to exactly one
stage, so ``frozen_depth: k`` freezes the first k stages and ``all`` (or any k
at or above the count) freezes the whole backbone: a linear probe.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from trainables.errors import UserError

log = logging.getLogger(__name__)

Stage = list[nn.Module | nn.Parameter]
ALL = "all"  # frozen_depth that freezes every stage
AUX_WEIGHT = 0.4  # Inception V3's auxiliary loss weight (Szegedy et al. 2016)
INCEPTION_AUX_MIN = 299  # smaller inputs leave no room for the auxiliary classifier
AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.")  # auxiliary heads in torchvision state dicts


@dataclass(frozen=True)
class Family:
    """How to fine-tune one torchvision family."""

    title: str  # as the docs name it
    pattern: str  # regular expression over torchvision model names
    classifier: str  # dotted path of the layer our head replaces
    stages: Callable[[Any], list[Stage]]  # torchvision models are typed loosely
    layout: str  # the stages in words, for docs/backbones.md
    count: int | None = None  # stages of every member, where building one to count is costly


class AuxOutputs(NamedTuple):
    """What a network with an auxiliary classifier returns in training."""

    logits: torch.Tensor
    aux: torch.Tensor


def _children(module: nn.Module, *names: str) -> Stage:
    return [getattr(module, name) for name in names]


def _resnet_stages(model: Any) -> list[Stage]:
    return [[model.conv1, model.bn1], *([getattr(model, f"layer{i}")] for i in range(1, 5))]


def _downsamples(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


def _by_resolution(blocks: list[nn.Module], stem: int = 1) -> list[Stage]:
    """The first ``stem`` blocks, then one stage per resolution: a downsampling block opens one."""
    stages: list[Stage] = [list(blocks[:stem])]
    for block in blocks[stem:]:
        if _downsamples(block) or len(stages) == 1:
            stages.append([block])
        else:
            stages[-1].append(block)
    return stages


def _pooled_stages(blocks: list[nn.Module]) -> list[Stage]:
    """Stages that end at max-pools; a trailing pool joins the stage before it."""
    stages: list[Stage] = []
    current: Stage = []
    for block in blocks:
        current.append(block)
        if isinstance(block, nn.MaxPool2d):
            stages.append(current)
            current = []
    if current:
        stages.append(current)
    return stages


def _features_stages(model: Any) -> list[Stage]:
    return _by_resolution(list(model.features.children()))


def _mobilenet_v3_stages(model: Any) -> list[Stage]:
    stages = _features_stages(model)
    stages[-1] += list(model.classifier)[:3]  # the pretrained 1024/1280-unit pre-logits layer
    return stages


def _convnext_stages(model: Any) -> list[Stage]:
    stages = _features_stages(model)
    stages[-1].append(model.classifier[0])  # the final LayerNorm
    return stages


def _regnet_stages(model: Any) -> list[Stage]:
    return [[model.stem], *([block] for block in model.trunk_output.children())]


def _densenet_stages(model: Any) -> list[Stage]:
    f = model.features
    return [
        _children(f, "conv0", "norm0", "relu0", "pool0"),
        *(_children(f, f"denseblock{i}", f"transition{i}") for i in range(1, 4)),
        _children(f, "denseblock4", "norm5"),
    ]


def _shufflenet_stages(model: Any) -> list[Stage]:
    return [[model.conv1], [model.stage2], [model.stage3], [model.stage4, model.conv5]]


def _squeezenet_stages(model: Any) -> list[Stage]:
    return _pooled_stages(list(model.features.children()))


def _mnasnet_stages(model: Any) -> list[Stage]:
    layers = list(model.layers.children())
    stages = _by_resolution(layers[:14], stem=8)  # 8 stem layers, then six block stacks
    stages[-1] += layers[14:]  # the final 1x1 convolution
    return stages


def _googlenet_stages(model: Any) -> list[Stage]:
    return [
        _children(model, "conv1", "maxpool1", "conv2", "conv3", "maxpool2"),
        _children(model, "inception3a", "inception3b", "maxpool3"),
        _children(model, *(f"inception4{x}" for x in "abcde"), "maxpool4"),
        _children(model, "inception5a", "inception5b"),
    ]


def _inception_stages(model: Any) -> list[Stage]:
    stem = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1"]
    stem += ["Conv2d_4a_3x3", "maxpool2"]
    return [
        _children(model, *stem),
        _children(model, "Mixed_5b", "Mixed_5c", "Mixed_5d"),
        _children(model, *(f"Mixed_6{x}" for x in "abcde")),
        _children(model, "Mixed_7a", "Mixed_7b", "Mixed_7c"),
    ]


def _vgg_stages(model: Any) -> list[Stage]:
    """Convolution blocks ending at each max-pool, then the pretrained fully connected layers."""
    return [*_pooled_stages(list(model.features.children())), list(model.classifier)[:6]]


def _vit_stages(model: Any) -> list[Stage]:
    layers = list(model.encoder.layers.children())
    quarter = max(1, len(layers) // 4)
    groups: list[Stage] = [list(layers[i : i + quarter]) for i in range(0, len(layers), quarter)]
    groups[-1].append(model.encoder.ln)
    stem: Stage = [model.conv_proj, model.class_token, model.encoder.pos_embedding]
    return [stem, *groups]


def _swin_stages(model: Any) -> list[Stage]:
    f = list(model.features.children())  # patch embedding, then (merging,) blocks x 4
    return [[f[0]], [f[1]], f[2:4], f[4:6], [*f[6:8], model.norm]]


def _maxvit_stages(model: Any) -> list[Stage]:
    blocks = list(model.blocks.children())
    return [[model.stem], *([b] for b in blocks[:-1]), [blocks[-1], *list(model.classifier)[:5]]]


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
        ),
        Family(
            "EfficientNet V2",
            r"efficientnet_v2_",
            "classifier",
            _features_stages,
            "stem (features[0]), then one stage per resolution",
        ),
        Family(
            "ConvNeXt",
            r"convnext_",
            "classifier.2",
            _convnext_stages,
            "stem, then the four stages (each with the downsampling before it); final norm last",
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
        ),
        Family(
            "Inception V3",
            r"inception_v3$",
            "fc",
            _inception_stages,
            "stem (Conv2d_1a ... maxpool2), Mixed_5, Mixed_6, Mixed_7",
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
        ),
        Family(
            "Swin",
            r"swin_[tsb]$",
            "head",
            _swin_stages,
            "patch embedding, then the four stages (patch merging opens each); final norm last",
        ),
        Family(
            "Swin V2",
            r"swin_v2_",
            "head",
            _swin_stages,
            "patch embedding, then the four stages (patch merging opens each); final norm last",
        ),
        Family(
            "MaxViT",
            r"maxvit_",
            "classifier.5",
            _maxvit_stages,
            "stem, then the four blocks; the last includes the pre-logits layers",
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
    family = _known(backbone)
    if family.title == "ViT":
        patch = int(backbone.rsplit("_", 1)[-1])
        return max(patch, math.ceil(image_size / patch) * patch)
    if family.title == "MaxViT":
        return max(224, math.ceil(image_size / 224) * 224)
    if family.title.startswith("Swin"):
        return max(image_size, 32)
    minimum = torchvision.models.get_model_weights(backbone).DEFAULT.meta["min_size"][0]
    return max(image_size, int(minimum))


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

    def forward(self, images: torch.Tensor) -> torch.Tensor | AuxOutputs:
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
    image_size: int = 224,
    training: bool = True,
) -> Classifier:
    """Builds a torchvision backbone with a new head and its first stages frozen.

    Args:
        frozen_depth: stages frozen from the input; ``"all"`` or a number at
            or above the backbone's stage count freezes the whole backbone
            (more than the count is clamped, with a warning).
        training: False builds the network for inference only (no auxiliary
            classifier), as an exported model is loaded.
    """
    family = _known(backbone)
    size = input_size(backbone, image_size)
    # Inception V3's auxiliary classifier needs 299 px, and is useless once
    # the stages it feeds back into (up to Mixed_6e, the third) are frozen.
    aux = (
        training
        and family.title == "Inception V3"
        and size >= INCEPTION_AUX_MIN
        and frozen_depth != ALL
        and int(frozen_depth) < 3
    )
    model = _load_backbone(backbone, weights, size, aux)
    in_features = _remove_classifier(model, family, num_classes)
    head = build_head(in_features, num_classes, head_hidden, head_dropout)
    stages = family.stages(model)
    depth = len(stages) if frozen_depth == ALL else int(frozen_depth)
    if depth > len(stages):
        log.warning(
            "frozen_depth %d > %d stages of %s: clamped to %d (the whole backbone)",
            depth,
            len(stages),
            backbone,
            len(stages),
        )
    return Classifier(
        model,
        head,
        stages,
        frozen_depth=depth,
        resize_to=size if size != image_size else None,
        head_prefixes=("head.", "backbone.AuxLogits.") if aux else ("head.",),
    )


def stage_count(backbone: str, image_size: int = 224) -> int:
    """How many stages ``frozen_depth`` counts for this backbone."""
    family = _known(backbone)
    if family.count is not None:
        return family.count
    return len(family.stages(_skeleton(backbone, input_size(backbone, image_size))))


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


def build_head(in_features: int, num_classes: int, hidden: int, dropout: float) -> nn.Module:
    if hidden == 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def resolve_weights(backbone: str, weights: str) -> torchvision.models.WeightsEnum | Path | None:
    """``none`` -> None, a file path -> Path, else the torchvision weights enum."""
    if weights.lower() == "none":
        return None
    if weights.endswith((".pth", ".pt", ".safetensors")) or "/" in weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"weights file not found: {path}; give an existing state-dict file")
        return path
    enum = torchvision.models.get_model_weights(backbone)
    name = weights.split(".")[-1]
    try:
        return enum[name]
    except KeyError:
        names = ["DEFAULT", *(w.name for w in enum), "none"]
        raise UserError(
            f"unknown weights '{weights}' for {backbone}; choose one of {', '.join(names)}, "
            "or a path to a state-dict file"
        ) from None


def cached_weights_file(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision's loader looks for (and downloads) a weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _known(backbone: str) -> Family:
    family = family_of(backbone)
    if family is None or backbone not in _torchvision_models():
        raise UserError(
            f"unknown backbone '{backbone}'; supported: {', '.join(supported_backbones())}"
        )
    return family


@functools.cache
def _torchvision_models() -> frozenset[str]:
    return frozenset(torchvision.models.list_models(module=torchvision.models))


def _builder_kwargs(backbone: str, size: int, aux: bool) -> dict[str, Any]:
    title = _known(backbone).title
    if title == "ViT":
        return {"image_size": size}
    if title == "MaxViT":
        return {"input_size": (size, size)}
    if title in ("Inception V3", "GoogLeNet"):
        # transform_input: the pretrained weights expect their own normalisation.
        return {"aux_logits": aux, "transform_input": True, "init_weights": True}
    return {}


def _skeleton(backbone: str, size: int) -> nn.Module:
    """The architecture without memory (meta tensors): for counting stages."""
    with torch.device("meta"):
        return torchvision.models.get_model(
            backbone, weights=None, **_builder_kwargs(backbone, size, aux=False)
        )


def _load_backbone(backbone: str, weights: str, size: int, aux: bool) -> nn.Module:
    resolved = resolve_weights(backbone, weights)
    model = torchvision.models.get_model(
        backbone, weights=None, **_builder_kwargs(backbone, size, aux)
    )
    if resolved is None:
        return model
    if isinstance(resolved, Path):
        state = _read_state_dict_file(resolved)
        where = str(resolved)
    else:
        try:
            # torchvision's own loader: the TORCH_HOME cache, downloading if missing.
            state = resolved.get_state_dict(progress=False, check_hash=True)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            target = cached_weights_file(resolved)
            raise UserError(
                f"cannot load {resolved} for {backbone} ({exc.__class__.__name__}: {exc}); "
                f"on a machine without internet run `ftsweep weights fetch SPACE.yaml` where "
                f"there is internet, or place the file {target.name} from {resolved.url} at "
                f"{target} (TORCH_HOME sets the cache folder)"
            ) from exc
        where = str(resolved)
    _load_state(model, backbone, size, state, where)
    return model


def _read_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise UserError(f"not a readable safetensors file ({exc})", str(path)) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle of objects, a truncated file
        raise UserError(
            f"cannot read a state dict from it with weights_only=True "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}); save the model's "
            "state_dict() (torch.save(model.state_dict(), path)) or a .safetensors file",
            str(path),
        ) from None
    if not isinstance(loaded, dict):
        raise UserError("not a state dict (a mapping of tensor names)", str(path))
    return loaded.get("state_dict", loaded)


def _load_state(
    model: nn.Module, backbone: str, size: int, state: dict[str, torch.Tensor], where: str
) -> None:
    """Loads pretrained weights into a freshly built backbone.

    A ViT's position embeddings are interpolated to this image size; the old
    classifier (other classes) and auxiliary heads the model does not have
    are left out.
    """
    state = dict(state)
    own = model.state_dict()
    key = "encoder.pos_embedding"
    if key in state and key in own and state[key].shape != own[key].shape:
        patch = int(backbone.rsplit("_", 1)[-1])
        state = dict(
            torchvision.models.vision_transformer.interpolate_embeddings(size, patch, state)
        )
        log.info(
            "%s: position embeddings interpolated to %dx%d patches",
            where,
            size // patch,
            size // patch,
        )
    state = {k: v for k, v in state.items() if k in own or not k.startswith(AUX_PREFIXES)}
    # A classifier trained for other classes does not fit; it is replaced anyway.
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped and not k.startswith(AUX_PREFIXES)]
    if unexpected or missing:
        raise UserError(
            f"state dict does not match {backbone}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}; use weights saved from the same torchvision architecture",
            where,
        )
    if skipped:
        log.info("weights %s: skipped %s (shape differs)", where, skipped)


def _remove_classifier(model: nn.Module, family: Family, num_classes: int) -> int:
    """Puts an identity where the classifier was; returns the width of the features."""
    parent_name, _, attr = family.classifier.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    if family.title == "SqueezeNet":  # a 1x1 convolution classifier: keep only the pooling
        conv = next(m for m in old.modules() if isinstance(m, nn.Conv2d))
        setattr(parent, attr, nn.AdaptiveAvgPool2d(1))
        return int(conv.in_channels)
    linear = next(m for m in old.modules() if isinstance(m, nn.Linear))
    setattr(parent, attr, nn.Identity())
    aux = getattr(model, "AuxLogits", None)
    if aux is not None:  # Inception V3's auxiliary classifier predicts our classes too
        aux.fc = nn.Linear(aux.fc.in_features, num_classes)
    return int(linear.in_features)


def inference_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A checkpoint's weights for inference: the EMA when it was on, no auxiliary heads."""
    weights = state["ema"]["model"] if state.get("ema") else state["model"]
    aux = tuple(f"backbone.{p}" for p in AUX_PREFIXES)
    return {k: v for k, v in weights.items() if not k.startswith(aux)}


if __name__ == "__main__":  # the table of docs/backbones.md
    print("| family | stages | stages, from the input | models |")
    print("| --- | --- | --- | --- |")
    for row in stage_table():
        print("| " + " | ".join(row) + " |")
