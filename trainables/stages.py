"""How each torchvision family's backbone splits into stages, counted from the input.

The stem first, then the family's natural blocks; every parameter of the
backbone lands in exactly one stage (tests/trainables/test_models.py checks it for every
family), which is what ``frozen_depth`` counts.
"""

from __future__ import annotations

from typing import Any

from torch import nn

Stage = list[nn.Module | nn.Parameter]


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
