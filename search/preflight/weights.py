"""Which pretrained weights a space can need, and fetching them ahead of a run.

Weights load through torchvision's own loader and cache (``TORCH_HOME``), a
timm backbone's through the Hugging Face cache (``HF_HOME``); a
cluster whose workers have no internet gets the files there first with
``ftsweep weights fetch SPACE.yaml``, run where there is internet (on shared
storage, or on every worker).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from search.space.params import Param, weight_pairs
from trainables import timm_backbones
from trainables.errors import UserError
from trainables.timm_backbones import TimmPretrained
from trainables.weights import cached_weights_file, resolve_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pretrained:
    """One torchvision weights file a space can ask for."""

    backbone: str
    weights: torchvision.models.WeightsEnum | TimmPretrained

    @property
    def file(self) -> Path:
        if isinstance(self.weights, TimmPretrained):
            return self.weights.file  # the Hugging Face cache (HF_HOME)
        return cached_weights_file(self.weights)

    @property
    def cache(self) -> str:
        """Which cache holds the file, in words."""
        hugging_face = isinstance(self.weights, TimmPretrained)
        return "Hugging Face cache (HF_HOME)" if hugging_face else "torch cache (TORCH_HOME)"

    def describe(self) -> str:
        return f"{self.backbone} {self.weights}"


def pretrained(params: tuple[Param, ...]) -> list[Pretrained]:
    """The torchvision weights files (not local files, not ``none``) a space can load."""
    found: dict[str, Pretrained] = {}
    for backbone, value, _ in weight_pairs(params):
        weights = resolve_weights(backbone, value)
        if isinstance(weights, torchvision.models.WeightsEnum):
            found.setdefault(weights.url, Pretrained(backbone, weights))
        elif isinstance(weights, TimmPretrained):
            found.setdefault(backbone, Pretrained(backbone, weights))
    return list(found.values())


def fetch(params: tuple[Param, ...], progress: bool = True) -> list[tuple[Pretrained, str]]:
    """Downloads every weights file the space can need into torch's cache.

    Files already there are left alone. Every file is tried; any that could
    not be fetched are named together at the end.

    Returns:
        (weights, "cached" | "downloaded") for each file.

    Raises:
        UserError: some files could not be downloaded (the others are kept).
    """
    done, failed = [], []
    for item in pretrained(params):
        if item.file.is_file():
            done.append((item, "cached"))
            continue
        if isinstance(item.weights, TimmPretrained):
            try:  # huggingface_hub's own download into its cache
                done.append((item, timm_backbones.fetch(item.backbone)[1]))
            except Exception as exc:  # no network, a repository that moved...
                failed.append(f"{item.describe()} ({type(exc).__name__}: {exc})"[:500])
            continue
        item.file.parent.mkdir(parents=True, exist_ok=True)
        match = torch.hub.HASH_REGEX.search(item.file.name)
        log.info("downloading %s: %s -> %s", item.describe(), item.weights.url, item.file)
        try:
            # The function torchvision's loader calls: a temporary file, the
            # hash in the file name checked, then moved into place.
            torch.hub.download_url_to_file(
                item.weights.url, str(item.file), match.group(1) if match else None, progress
            )
        except Exception as exc:  # URLError, a hash mismatch, a full disk...
            failed.append(
                f"{item.describe()} from {item.weights.url} ({type(exc).__name__}: {exc})"
            )
            continue
        done.append((item, "downloaded"))
    if failed:
        raise UserError(
            f"could not download {len(failed)} of {len(failed) + len(done)} weights files: "
            + "; ".join(failed)
            + f". The others are in {Path(torch.hub.get_dir()) / 'checkpoints'}; run this where "
            "there is internet, or copy the files there (TORCH_HOME sets the folder)"
        )
    return done
