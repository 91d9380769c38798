"""ONNX export of every other torchvision family the family tests build, shortened."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from search.model.onnx import TOLERANCE, write_onnx
from tests.conftest import model_folder, smallest_of
from tests.outputs.test_onnx import FAMILIES
from trainables.backbones import FAMILIES as TORCHVISION_FAMILIES
from trainables.models import build_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# Every torchvision family the family tests build (test_models) but those
# test_onnx exports whole, by its smallest member, with its runs of identical
# blocks shortened (shortened()): each of its operators goes through ftsweep's
# ONNX writer and onnxruntime in a fraction of the tracing time. The whole
# networks of all the families, with their differences and export times:
# `make bench-onnx` (benchmarks/results/onnx-families-cpu.md). A module of its
# own so that make test's two processes share the ONNX tracing.
OTHER_FAMILIES = sorted(
    {smallest_of(family) for family in TORCHVISION_FAMILIES.values()} - set(FAMILIES)
)


def shortened(network: nn.Module, images: torch.Tensor) -> nn.Module:
    """``network`` without the blocks that repeat: a block in a Sequential or
    ModuleList of blocks of one class that gives out the shape it takes in is
    dropped once two of its class were kept (the second may differ in what
    its weights do not show: a Swin block's shifted window). Blocks that
    change the shape stay, so the rest of the network fits. The whole
    network where nothing repeats or the shortened one no longer runs."""
    keeps_shape: dict[int, bool] = {}

    def note(block: nn.Module, args: tuple, output: object) -> None:
        first = args[0] if args else None
        same = isinstance(first, torch.Tensor) and isinstance(output, torch.Tensor)
        keeps_shape[id(block)] = same and first.shape == output.shape  # type: ignore[union-attr]

    short = copy.deepcopy(network).eval()
    containers = [m for m in short.modules() if isinstance(m, nn.Sequential | nn.ModuleList)]
    blocks = [
        b
        for c in containers
        for b in c
        if len({type(x) for x in c}) == 1 and not isinstance(b, nn.Sequential | nn.ModuleList)
    ]
    hooks = [b.register_forward_hook(note) for b in blocks]
    with torch.no_grad():
        short(images)
    for hook in hooks:
        hook.remove()
    kept: dict[type, int] = {}
    for container in containers:
        drop = []
        for i, block in enumerate(container):
            if not keeps_shape.get(id(block), False):
                continue
            kept[type(block)] = kept.get(type(block), 0) + 1
            if kept[type(block)] > 2:
                drop.append(i)
        for i in reversed(drop):
            del container[i]
    if all(count <= 2 for count in kept.values()):  # nothing dropped
        return network
    try:
        with torch.no_grad():
            short(images)
    except RuntimeError:
        return network
    return short


@pytest.mark.parametrize("backbone", OTHER_FAMILIES)
def test_every_other_family_round_trips_through_onnxruntime(backbone, tmp_path):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    network = build_model(backbone, 3, image_size=32).eval()
    network = shortened(network, images.float() / 255)
    source = model_folder(tmp_path / "pt", ["c0", "c1", "c2"], backbone, 32, network=network)
    # write_onnx fails (naming the family) on a larger difference or another top-1.
    assert write_onnx(network, source, tmp_path / "onnx", images) <= TOLERANCE


def test_shortening_keeps_two_of_each_run_and_whole_networks_it_would_break():
    vit = build_model("vit_b_16", 3, image_size=32)
    images = torch.rand(1, 3, 32, 32)
    short = shortened(vit, images)
    layers = [m for m in short.modules() if type(m).__name__ == "EncoderBlock"]
    assert len(layers) == 2 and len(list(vit.modules())) > len(list(short.modules()))
    densenet = build_model("densenet121", 3, image_size=32)
    assert shortened(densenet, images) is densenet
