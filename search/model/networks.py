"""The network an exported folder describes: one classifier, or an ensemble of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from trainables.models import inference_network

ENSEMBLE = "ensemble"  # model.json's backbone for an ensemble of finalists


class Ensemble(nn.Module):
    """The mean of its members' logits, each divided by its own temperature.

    The members' weights are its state dict (``members.0.``, ``members.1.``,
    ...); the temperatures are model.json's, not weights.
    """

    def __init__(self, members: Sequence[nn.Module], temperatures: Sequence[float]) -> None:
        super().__init__()
        if len(members) != len(temperatures) or not members:
            raise ValueError("an ensemble needs one temperature per member, and members")
        self.members = nn.ModuleList(members)
        self.register_buffer(
            "temperatures", torch.tensor(list(temperatures)).view(-1, 1, 1), persistent=False
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([member(images) for member in self.members])
        return (logits / self.get_buffer("temperatures").to(logits.dtype)).mean(dim=0)


def build_network(description: dict[str, Any]) -> nn.Module:
    """The (untrained) network of a checked model.json: its weights load into it."""
    classes, size = len(description["classes"]), int(description["image_size"])
    if description["backbone"] == ENSEMBLE:
        members = description["members"]
        return Ensemble(
            [inference_network(m["model"], classes, size) for m in members],
            [float(m["temperature"]) for m in members],
        )
    return inference_network(description["model"], classes, size)
