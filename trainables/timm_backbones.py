"""timm backbones (the optional ``ftsweep[timm]`` extra): ``backbone: timm/NAME``.

NAME is a timm model, with its pretrained tag or without (timm's default
tag): ``timm/convnext_tiny.fb_in22k_ft_in1k``, ``timm/vit_small_patch16_224``,
the same spelling as the model's Hugging Face repository. The model is built
without its classifier (``num_classes=0``: pooled features), our head follows.

- Stages for ``frozen_depth``: timm's own coarse parameter groups
  (``group_matcher(coarse=True)``: the stem, then the natural stages of a CNN
  or each block of a transformer, whose blocks are bundled into
  ``TRANSFORMER_STAGES`` runs, as for torchvision's ViT). Every parameter is in
  exactly one group; a normalisation layer's module is frozen whole (eval mode).
- Normalisation: the model's own mean and std (its pretrained config); the
  network takes ImageNet-normalised input like every ftsweep model and maps
  it to its own statistics inside (``Classifier``), so training, evaluate,
  predict and an exported model preprocess alike.
- Weights (``weights: DEFAULT``): the Hugging Face cache (``HF_HOME``) first,
  then timm's own download; a local file (``weights: /path.safetensors``)
  loads through timm too. Either way timm's checkpoint filter resizes a
  ViT's position embeddings to the trial's input size.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from trainables.errors import UserError
from trainables.stages import Stage

PREFIX = "timm/"
TRANSFORMER_STAGES = 4  # runs of blocks after the stem, where a model has more than MANY
MANY = 8
WEIGHTS_FILE = "model.safetensors"  # what timm's Hugging Face repositories hold
INSTALL = "pip install 'ftsweep[timm]'"


def is_timm(backbone: str) -> bool:
    return backbone.startswith(PREFIX)


def model_name(backbone: str) -> str:
    return backbone[len(PREFIX) :]


def require() -> Any:
    """The timm module, or a UserError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise UserError(
            f"timm backbones need the timm package, which is not installed: {INSTALL}"
        ) from None
    return timm


def check(backbone: str) -> None:
    """A UserError unless timm builds this model (and knows its pretrained tag)."""
    timm = require()
    arch, _, tag = model_name(backbone).partition(".")
    if not timm.is_model(arch):
        hint = difflib.get_close_matches(arch, _architectures(), n=1)
        raise UserError(
            f"timm has no model '{arch}'"
            + (f" (did you mean '{PREFIX}{hint[0]}'?)" if hint else "")
            + '; `python -c "import timm; print(timm.list_models(pretrained=True))"` lists them'
        )
    tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
    if tag and tag not in tags:
        raise UserError(
            f"timm's {arch} has no pretrained tag '{tag}'; its tags: {', '.join(tags) or 'none'}"
        )


@functools.cache
def _architectures() -> list[str]:
    return list(require().list_models())


def pretrained_cfg(backbone: str) -> Any:
    from timm.models import get_pretrained_cfg

    check(backbone)
    cfg = get_pretrained_cfg(model_name(backbone))
    if cfg is None:
        raise UserError(f"timm has no pretrained configuration for '{model_name(backbone)}'")
    return cfg


def input_stats(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the model was pretrained with."""
    cfg = pretrained_cfg(backbone)
    return tuple(cfg.mean), tuple(cfg.std)


def input_side(backbone: str, image_size: int) -> int:
    """Any side for a CNN; a multiple of the patch size for a patch model."""
    patch = re.search(r"patch(\d+)", backbone)
    if patch is None:
        return image_size
    size = int(patch.group(1))
    return -(-image_size // size) * size


def hub_id(backbone: str) -> str | None:
    """The Hugging Face repository of the model's pretrained weights (None: none there)."""
    return pretrained_cfg(backbone).hf_hub_id


def cached_file(backbone: str) -> Path | None:
    """The weights file in the Hugging Face cache, if it is there."""
    from huggingface_hub import try_to_load_from_cache

    repo = hub_id(backbone)
    if repo is None:
        return None
    found = try_to_load_from_cache(repo, WEIGHTS_FILE)
    return Path(found) if isinstance(found, str) else None


def fetch(backbone: str) -> tuple[Path, str]:
    """Downloads the weights into the Hugging Face cache: (file, cached | downloaded)."""
    from huggingface_hub import hf_hub_download

    found = cached_file(backbone)
    if found is not None:
        return found, "cached"
    repo = hub_id(backbone)
    if repo is None:
        raise UserError(f"{backbone} has no weights on the Hugging Face hub to fetch")
    return Path(hf_hub_download(repo, WEIGHTS_FILE)), "downloaded"


@dataclass(frozen=True)
class TimmPretrained:
    """The pretrained weights of a timm model, from the Hugging Face hub (or its cache)."""

    backbone: str

    @property
    def file(self) -> Path:
        """Where the Hugging Face cache holds (or will hold) the file."""
        found = cached_file(self.backbone)
        if found is not None:
            return found
        from huggingface_hub.constants import HF_HUB_CACHE

        repo = hub_id(self.backbone) or model_name(self.backbone)
        return Path(HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / WEIGHTS_FILE

    def __str__(self) -> str:
        return f"DEFAULT (Hugging Face {hub_id(self.backbone)})"


def resolve(backbone: str, weights: str) -> TimmPretrained | Path | None:
    """``none`` -> None, a file -> Path, ``DEFAULT`` -> the hub's weights."""
    check(backbone)
    if weights.lower() == "none":
        return None
    if weights.upper() == "DEFAULT":
        if hub_id(backbone) is None:
            raise UserError(f"{backbone} has no pretrained weights on the Hugging Face hub")
        return TimmPretrained(backbone)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(
            f"weights for {backbone} must be none, DEFAULT or an existing file; {path} is not one"
        )
    return path


def build(
    backbone: str, weights: str, size: int, stochastic_depth: float | None = None
) -> tuple[nn.Module, int]:
    """The timm model without its classifier, weights loaded; and its feature width.

    ``weights``: ``none``, ``DEFAULT`` (the pretrained tag's weights) or a file.
    """
    timm = require()
    cfg = pretrained_cfg(backbone)
    kwargs: dict[str, Any] = {"num_classes": 0}
    if cfg.fixed_input_size:  # position embeddings at this grid (resized from the weights')
        kwargs["img_size"] = size
    if stochastic_depth is not None:
        kwargs["drop_path_rate"] = stochastic_depth
    pretrained, overlay = _source(backbone, weights)
    try:
        model = timm.create_model(
            model_name(backbone), pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs
        )
    except TypeError as exc:  # a keyword the model does not take
        raise UserError(f"{backbone} cannot be built with {sorted(kwargs)} ({exc})") from None
    except Exception as exc:  # no network (httpx's errors too), a bad file, a mismatch
        if not pretrained:
            raise
        raise UserError(
            f"cannot load the weights of {backbone} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}); on a machine without "
            "internet run `ftsweep weights fetch SPACE.yaml` where there is internet (HF_HOME "
            "sets the cache folder), or give weights: a local .safetensors file"
        ) from exc
    # The pooled output's width: after a pre-logits layer where there is one (MobileNet V3).
    return model, int(getattr(model, "head_hidden_size", None) or model.num_features)


def _source(backbone: str, weights: str) -> tuple[bool, dict[str, Any]]:
    """(pretrained, pretrained_cfg_overlay) for timm.create_model."""
    resolved = resolve(backbone, weights)
    if resolved is None:
        return False, {}
    if isinstance(resolved, Path):
        return True, {"file": str(resolved)}
    found = cached_file(backbone)  # else timm downloads it into the cache
    return True, ({"file": str(found)} if found is not None else {})


def stages(model: nn.Module) -> list[Stage]:
    """The stem, then the model's coarse groups (bundled where there are many)."""
    from timm.models import group_parameters

    matcher: Any = model.group_matcher  # every timm model has one
    groups = [names for _, names in sorted(group_parameters(model, matcher(coarse=True)).items())]
    stem, rest = groups[0], groups[1:]
    if len(rest) > MANY:
        cut = [round(i * len(rest) / TRANSFORMER_STAGES) for i in range(TRANSFORMER_STAGES + 1)]
        rest = [sum(rest[a:b], []) for a, b in zip(cut, cut[1:], strict=False)]
    return [_stage(model, names) for names in [stem, *rest] if names]


def _stage(model: nn.Module, names: list[str]) -> Stage:
    """Leaf modules whole (a BatchNorm then stays in eval mode when frozen); the
    parameters of modules with children (a layer-scale gamma, a class token) one by one."""
    stage: Stage = []
    taken: set[str] = set()
    for name in names:
        owner, _, _ = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        if owner and not any(True for _ in module.children()):
            if owner not in taken:
                taken.add(owner)
                stage.append(module)
        else:
            stage.append(model.get_parameter(name))
    return stage
