"""Pretrained weights: torchvision's (TORCH_HOME's cache, or downloaded) or a file.

A ViT's position embeddings are interpolated to the trial's input size; a
classifier trained for other classes and auxiliary heads the model lacks are
left out; nothing is unpickled (``weights_only=True``, or safetensors).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from trainables import timm_backbones
from trainables.errors import UserError
from trainables.timm_backbones import is_timm

log = logging.getLogger(__name__)


AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.")  # auxiliary heads in torchvision state dicts


def resolve_weights(
    backbone: str, weights: str
) -> torchvision.models.WeightsEnum | timm_backbones.TimmPretrained | Path | None:
    """``none`` -> None, a file path -> Path, else the torchvision weights enum
    (for a timm backbone: the Hugging Face hub's weights, timm_backbones.resolve)."""
    if is_timm(backbone):
        return timm_backbones.resolve(backbone, weights)
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


def load_backbone(backbone: str, weights: str, kwargs: dict[str, Any], size: int) -> nn.Module:
    """torchvision's model built with ``kwargs``, with the pretrained ``weights`` loaded:
    ``none``, a torchvision weights name (from TORCH_HOME's cache) or a state-dict file."""
    resolved = resolve_weights(backbone, weights)
    assert not isinstance(resolved, timm_backbones.TimmPretrained)  # models.py builds those
    model = torchvision.models.get_model(backbone, weights=None, **kwargs)
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
    metadata = getattr(state, "_metadata", None)  # the file's own module versions
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
    missing, unexpected = load_weights(model, state, strict=False, metadata=metadata)
    missing = [k for k in missing if k not in skipped and not k.startswith(AUX_PREFIXES)]
    if unexpected or missing:
        raise UserError(
            f"state dict does not match {backbone}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}; use weights saved from the same torchvision architecture",
            where,
        )
    if skipped:
        log.info("weights %s: skipped %s (shape differs)", where, skipped)


def inference_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A checkpoint's weights for inference: the EMA when it was on, no auxiliary heads."""
    weights = state["ema"]["model"] if state.get("ema") else state["model"]
    aux = tuple(f"backbone.{p}" for p in AUX_PREFIXES)
    return {k: v for k, v in weights.items() if not k.startswith(aux)}


def load_weights(
    module: nn.Module,
    weights: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    metadata: Any = None,
) -> Any:
    """``module.load_state_dict(weights)`` for a plain mapping of tensors.

    A state dict carries each submodule's version (``_metadata``); a
    safetensors file, or a filtered copy of a state dict, does not, and
    torchvision's MNASNet refuses weights without it ("version should be set
    to 1 or 2"). The mapping's own versions are kept where it has them (or
    ``metadata``, taken from the file before it was copied), else the
    module's own: the weights come from the same code that built it.
    """
    state = OrderedDict(weights)
    found = metadata if metadata is not None else getattr(weights, "_metadata", None)
    state._metadata = found if found is not None else module.state_dict()._metadata  # type: ignore[attr-defined]
    return module.load_state_dict(state, strict=strict)
