"""Backbones from torchvision, their stages, a new head, and freezing.

One table of families says, for each torchvision family, which layer is the
classifier to replace and how the backbone splits into stages counted from the
input; ``frozen_depth: k`` freezes the first k stages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from trainables.errors import UserError

log = logging.getLogger(__name__)

Stage = list[nn.Module | nn.Parameter]


@dataclass(frozen=True)
class Family:
    """How to fine-tune one torchvision family."""

    prefixes: tuple[str, ...]
    classifier: str  # dotted path of the layer our head replaces
    stages: Callable[[Any], list[Stage]]  # torchvision models are typed loosely
    takes_image_size: bool = False  # the builder is told the input size (ViT)


def _resnet_stages(model: Any) -> list[Stage]:
    return [[model.conv1, model.bn1]] + [[getattr(model, f"layer{i}")] for i in range(1, 5)]


def _downsamples(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


def _features_stages(model: Any) -> list[Stage]:
    """Stem, then one stage per resolution: a block that downsamples opens a stage."""
    blocks = list(model.features.children())
    stages: list[Stage] = [[blocks[0]]]
    for block in blocks[1:]:
        if _downsamples(block) or len(stages) == 1:
            stages.append([block])
        else:
            stages[-1].append(block)
    return stages


def _vit_stages(model: Any) -> list[Stage]:
    layers = list(model.encoder.layers.children())
    quarter = max(1, len(layers) // 4)
    groups: list[Stage] = [list(layers[i : i + quarter]) for i in range(0, len(layers), quarter)]
    groups[-1].append(model.encoder.ln)
    stem: Stage = [model.conv_proj, model.class_token, model.encoder.pos_embedding]
    return [stem, *groups]


FAMILIES: dict[str, Family] = {
    "resnet": Family(("resnet", "resnext", "wide_resnet"), "fc", _resnet_stages),
    "mobilenet": Family(("mobilenet_v2", "mobilenet_v3"), "classifier", _features_stages),
    "efficientnet": Family(("efficientnet_",), "classifier", _features_stages),
    "convnext": Family(("convnext_",), "classifier.2", _features_stages),
    "vit": Family(("vit_",), "heads", _vit_stages, takes_image_size=True),
}


def family_of(backbone: str) -> Family | None:
    for family in FAMILIES.values():
        if backbone.startswith(family.prefixes):
            return family
    return None


def supported_backbones() -> list[str]:
    """Every torchvision classification model that has a family here."""
    names = torchvision.models.list_models(module=torchvision.models)
    return [n for n in names if family_of(n) is not None]


class Classifier(nn.Module):
    """A backbone (classifier removed) followed by a new head.

    Frozen stages stay in eval mode whatever ``train()`` says, so their
    BatchNorm running statistics never change.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, frozen: list[nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self._frozen = tuple(frozen)  # a tuple is not registered as submodules

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self


def build_model(
    backbone: str,
    num_classes: int,
    *,
    weights: str = "none",
    frozen_depth: int = 0,
    head_hidden: int = 0,
    head_dropout: float = 0.0,
    image_size: int = 224,
) -> Classifier:
    """Builds a torchvision backbone with a new head and its first stages frozen."""
    family = family_of(backbone)
    if family is None:
        raise UserError(
            f"unknown backbone '{backbone}'; supported: {', '.join(supported_backbones())}"
        )
    model = _load_backbone(backbone, family, weights, image_size)
    in_features = _remove_classifier(model, family.classifier)
    head = build_head(in_features, num_classes, head_hidden, head_dropout)
    stages = family.stages(model)
    if frozen_depth > len(stages):
        log.warning(
            "frozen_depth %d > %d stages of %s: freezing the whole backbone",
            frozen_depth,
            len(stages),
            backbone,
        )
    frozen = freeze(stages[:frozen_depth])
    return Classifier(model, head, frozen)


def stage_count(backbone: str) -> int:
    family = family_of(backbone)
    if family is None:
        raise UserError(f"unknown backbone '{backbone}'")
    with torch.device("meta"):
        model = torchvision.models.get_model(backbone, weights=None)
    return len(family.stages(model))


def build_head(in_features: int, num_classes: int, hidden: int, dropout: float) -> nn.Module:
    if hidden == 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def freeze(stages: list[Stage]) -> list[nn.Module]:
    """Stops gradients through the given stages; returns their modules (kept in eval)."""
    modules: list[nn.Module] = []
    for stage in stages:
        for part in stage:
            params = [part] if isinstance(part, nn.Parameter) else list(part.parameters())
            for param in params:
                param.requires_grad_(False)
            if isinstance(part, nn.Module):
                modules.append(part)
    return modules


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


def _load_backbone(backbone: str, family: Family, weights: str, image_size: int) -> nn.Module:
    resolved = resolve_weights(backbone, weights)
    kwargs = {}
    if family.takes_image_size:
        if isinstance(resolved, torchvision.models.WeightsEnum):
            if image_size != resolved.meta["min_size"][0]:
                raise UserError(
                    f"{backbone} with pretrained weights needs image_size "
                    f"{resolved.meta['min_size'][0]}, not {image_size}"
                )
        else:
            kwargs["image_size"] = image_size
    if not isinstance(resolved, torchvision.models.WeightsEnum):
        model = torchvision.models.get_model(backbone, weights=None, **kwargs)
        if isinstance(resolved, Path):
            _load_state_dict_file(model, resolved)
        return model
    try:
        return torchvision.models.get_model(backbone, weights=resolved, **kwargs)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        target = cached_weights_file(resolved)
        raise UserError(
            f"cannot load {resolved} for {backbone} ({exc.__class__.__name__}: {exc}); "
            f"on a machine without internet, place the file {target.name} from {resolved.url} "
            f"at {target} (TORCH_HOME sets the cache folder)"
        ) from exc


def _load_state_dict_file(model: nn.Module, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, dict):
            raise UserError("not a state dict (a mapping of tensor names)", str(path))
        state = loaded.get("state_dict", loaded)
    own = model.state_dict()
    # A classifier trained for other classes does not fit; it is replaced anyway.
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k not in skipped]:
        raise UserError(
            f"state dict does not match {model.__class__.__name__}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}; use weights saved from the "
            "same torchvision architecture",
            str(path),
        )
    if skipped:
        log.info("weights %s: skipped %s (shape differs)", path, skipped)


def _remove_classifier(model: nn.Module, dotted: str) -> int:
    parent_name, _, attr = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    linear = (
        old
        if isinstance(old, nn.Linear)
        else next(m for m in old.modules() if isinstance(m, nn.Linear))
    )
    setattr(parent, attr, nn.Identity())
    return int(linear.in_features)
