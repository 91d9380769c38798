"""Model building: heads, freezing, BatchNorm statistics, pretrained weights."""

from __future__ import annotations

import copy
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from tests.conftest import smallest_of
from trainables.backbones import (
    FAMILIES,
    builder_kwargs,
    family_of,
    stage_count,
    supported_backbones,
)
from trainables.errors import UserError
from trainables.loop import classification_loss
from trainables.models import (
    AUX_WEIGHT,
    AuxOutputs,
    _remove_classifier,
    build_model,
    input_size,
)
from trainables.optim import build_optimizer
from trainables.weights import cached_weights_file, inference_weights


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_every_torchvision_classification_model_is_supported():
    assert supported_backbones() == torchvision.models.list_models(module=torchvision.models)
    assert {family_of(n).title for n in supported_backbones()} == set(FAMILIES)


@pytest.mark.parametrize("backbone", supported_backbones())
def test_stages_split_every_backbone_parameter_exactly_once(backbone):
    """On the meta device (no memory): frozen_depth means stages of the whole backbone."""
    family = family_of(backbone)
    if family.count is not None:  # built on the CPU in the family test instead
        return
    size = input_size(backbone, 32)
    with torch.device("meta"):
        model = torchvision.models.get_model(backbone, **builder_kwargs(backbone, size, False))
    _remove_classifier(model, family, 3)
    stages = family.stages(model)
    assert len(stages) == stage_count(backbone) >= 4
    in_stages = [id(p) for s in stages for part in s for p in _params(part)]
    assert len(in_stages) == len(set(in_stages)), "a parameter in two stages"
    assert set(in_stages) == {id(p) for p in model.parameters()}, "a parameter in no stage"


def _params(part):
    return [part] if isinstance(part, nn.Parameter) else list(part.parameters())


@pytest.fixture
def built_once(monkeypatch):
    """torchvision builds a backbone once in the test; each build after gets a copy.

    Initialising VGG's 133 M parameters takes seconds on the CPU, and the
    family test builds each backbone once per frozen depth.
    """
    build = torchvision.models.get_model
    built: dict[str, nn.Module] = {}

    def get_model(name: str, **kwargs):
        key = f"{name} {sorted(kwargs.items())!r} on {torch.get_default_device()}"
        if key not in built:
            built[key] = build(name, **kwargs)
        return copy.deepcopy(built[key])

    monkeypatch.setattr(torchvision.models, "get_model", get_model)


@pytest.mark.parametrize("title", list(FAMILIES))
def test_every_family_fine_tunes_at_every_frozen_depth(title, built_once):
    """Build, freeze each depth, one step: frozen weights and BN statistics stay, the rest moves."""
    backbone = smallest_of(FAMILIES[title])
    count = stage_count(backbone)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    for depth in [*range(count + 1), "all"]:
        torch.manual_seed(0)
        model = build_model(backbone, 3, frozen_depth=depth, head_hidden=8, image_size=32)
        assert model.stage_count == count
        frozen_count = count if depth == "all" else depth
        assert model.frozen_depth == frozen_count
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        expected = {
            f"backbone.{n}" for n, p in model.backbone.named_parameters() if id(p) in _ids(model)
        }
        assert frozen == expected
        if frozen_count == count:  # a linear probe: only the head trains
            assert all(n.startswith("head.") for n in trainable)
        before = _snapshot(model)
        optimizer = build_optimizer(model, "sgd", lr=0.1, momentum=0.9)
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        assert not in_optimizer & _ids(model), "frozen parameters in the optimizer"
        # No backward through the frozen prefix: its outputs carry no autograd graph.
        graphs: list[bool] = []
        hooks = [m.register_forward_hook(_recorder(graphs)) for m in model._frozen]
        model.train()
        optimizer.zero_grad()
        output = model(images)
        assert output.shape == (2, 3)
        nn.functional.cross_entropy(output, labels).backward()
        optimizer.step()
        for hook in hooks:
            hook.remove()
        assert not any(graphs)
        after = model.state_dict()
        for name in frozen:
            assert torch.equal(before[name], after[name]), (depth, name)
        frozen_modules = {id(m) for m in model._frozen}
        for mod_name, module in model.named_modules():
            if id(module) in frozen_modules:
                assert not module.training
                for buf_name, buf in module.named_buffers():
                    key = f"{mod_name}.{buf_name}"
                    assert torch.equal(before[key], buf), (depth, key)
        moved = [n for n in trainable if not torch.equal(before[n], after[n])]
        assert any(n.startswith("head.") for n in moved)
        if frozen_count < count:
            assert any(n.startswith("backbone.") for n in moved), depth
        assert not set(optimizer.state) & _ids(model), "optimizer state for frozen parameters"
        model.eval()
        assert model(images).shape == (2, 3)


def _ids(model) -> set[int]:
    return {id(p) for p in model.frozen_parameters()}


def _recorder(graphs: list[bool]):
    return lambda _module, _inputs, output: graphs.append(_needs_grad(output))


def _needs_grad(output) -> bool:
    tensors = output if isinstance(output, tuple | list) else [output]
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def test_unfrozen_batchnorm_statistics_do_change():
    model = build_model("resnet18", 2, frozen_depth=1, image_size=32)
    before = model.backbone.layer4[0].bn1.running_mean.clone()
    model.train()
    model(torch.randn(4, 3, 32, 32))
    assert not torch.equal(before, model.backbone.layer4[0].bn1.running_mean)
    assert not model.backbone.bn1.training and model.backbone.layer4.training


def test_frozen_depth_beyond_stages_freezes_whole_backbone():
    model = build_model("resnet18", 2, frozen_depth=99, image_size=32)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_head_shapes():
    linear = build_model("resnet18", 7, head_hidden=0, head_dropout=0.2)
    assert [type(m) for m in linear.head] == [nn.Dropout, nn.Linear]
    assert linear.head[1].out_features == 7
    hidden = build_model("convnext_tiny", 5, head_hidden=64)
    assert hidden.head[0].in_features == 768 and hidden.head[-1].out_features == 5


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def test_default_weights_load_from_torch_cache(torch_home):
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    reference = torchvision.models.resnet18()
    target = cached_weights_file(weights)
    assert target.parent == torch_home / "hub" / "checkpoints"
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    model = build_model("resnet18", 4, weights="DEFAULT")
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    named = build_model("resnet18", 4, weights="IMAGENET1K_V1")
    assert torch.equal(named.backbone.layer4[1].bn2.weight, reference.layer4[1].bn2.weight)


def test_vit_default_weights_load_from_torch_cache_at_another_size(torch_home):
    weights = torchvision.models.ViT_B_16_Weights.DEFAULT
    torch.manual_seed(0)
    reference = torchvision.models.vit_b_16()  # 224 px: a 14x14 grid, as torchvision ships
    target = cached_weights_file(weights)
    assert target.name == Path(weights.url).name  # the name torchvision's loader looks for
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    model = build_model("vit_b_16", 5, weights="DEFAULT", image_size=32, frozen_depth="all")
    assert torch.equal(model.backbone.conv_proj.weight, reference.conv_proj.weight)
    assert model.backbone.encoder.pos_embedding.shape == (1, 5, 768)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_missing_weights_offline_names_the_file(torch_home):
    with pytest.raises(UserError) as info:
        build_model("resnet18", 4, weights="DEFAULT")
    expected = cached_weights_file(torchvision.models.ResNet18_Weights.DEFAULT)
    assert str(expected) in str(info.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("backbone", ["mobilenet_v3_small", "mnasnet0_5"])
def test_weights_from_a_state_dict_file(tmp_path, suffix, backbone):
    """MNASNet refuses a state dict without its version, which safetensors files
    (and copies of a state dict) do not carry."""
    reference = torchvision.models.get_model(backbone)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = build_model(backbone, 3, weights=str(path))
    first = next(name for name, _ in reference.named_parameters())
    assert torch.equal(model.backbone.get_parameter(first), reference.get_parameter(first))


def test_state_dict_of_another_architecture_is_rejected(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    with pytest.raises(UserError, match="does not match"):
        build_model("resnet18", 3, weights=str(path))


def test_unknown_backbone_lists_supported():
    with pytest.raises(UserError, match="supported: .*resnet50"):
        build_model("alexnet2", 3)


def _grid(pos_embedding: torch.Tensor) -> torch.Tensor:
    """(1, 1 + g*g, D) -> (1, D, g, g): the patch part of a ViT position embedding."""
    patches = pos_embedding[:, 1:]
    side = int(patches.shape[1] ** 0.5)
    return patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)


def test_vit_position_embeddings_are_interpolated_from_another_image_size(tmp_path):
    torch.manual_seed(0)
    saved = torchvision.models.vit_b_16(image_size=64)  # a 4x4 patch grid
    path = tmp_path / "vit_64px.pth"
    torch.save(saved.state_dict(), path)
    model = build_model("vit_b_16", 3, weights=str(path), image_size=32)  # a 2x2 grid
    loaded = model.backbone.encoder.pos_embedding
    assert loaded.shape == (1, 1 + 2 * 2, 768)
    source = saved.encoder.pos_embedding.detach()
    assert torch.equal(loaded[:, :1], source[:, :1])  # the class token's position is kept
    expected = nn.functional.interpolate(
        _grid(source), size=(2, 2), mode="bicubic", align_corners=True
    )
    torch.testing.assert_close(_grid(loaded.detach()), expected)
    assert torch.equal(
        model.backbone.encoder.layers[5].mlp[0].weight, saved.encoder.layers[5].mlp[0].weight
    )
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    # A size that is no multiple of the patch is built for the next multiple, and resized up.
    odd = build_model("vit_b_16", 3, weights=str(path), image_size=40)
    assert odd.resize_to == 48 and odd.backbone.encoder.pos_embedding.shape[1] == 1 + 3 * 3
    assert odd(torch.randn(1, 3, 40, 40)).shape == (1, 3)


def test_inception_v3_trains_its_auxiliary_classifier_and_exports_without_it():
    torch.manual_seed(0)
    model = build_model("inception_v3", 4, image_size=299)
    aux_fc = model.backbone.AuxLogits.fc
    assert aux_fc.out_features == 4
    optimizer = build_optimizer(model, "sgd", lr=0.1, backbone_lr_mult=0.01)
    head_group = next(g for g in optimizer.param_groups if g["name"] == "head")
    assert any(p is aux_fc.weight for p in head_group["params"])  # new layer: the head's lr
    model.train()
    outputs = model(torch.randn(2, 3, 299, 299))
    assert isinstance(outputs, AuxOutputs) and outputs.aux.shape == (2, 4)
    targets = torch.tensor([0, 3])
    loss = classification_loss(outputs, targets, nn.CrossEntropyLoss())
    ce = nn.functional.cross_entropy
    expected = ce(outputs.logits, targets) + AUX_WEIGHT * ce(outputs.aux, targets)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert aux_fc.weight.grad is not None
    # For inference (export, load_model) there is no auxiliary head; the weights still fit.
    served = build_model("inception_v3", 4, image_size=299, training=False)
    served.load_state_dict(inference_weights({"model": model.state_dict()}))
    assert served.backbone.AuxLogits is None
    # Too small for the auxiliary head (resized up to 75 px), or its stages frozen: none.
    assert build_model("inception_v3", 4, image_size=64).resize_to == 75
    assert build_model("inception_v3", 4, image_size=64).backbone.AuxLogits is None
    assert build_model("inception_v3", 4, image_size=299, frozen_depth=3).backbone.AuxLogits is None


def test_stochastic_depth_reaches_the_families_that_take_it(write_space):
    from torchvision.ops import StochasticDepth

    from search.space import load_space

    model = build_model("convnext_tiny", 3, stochastic_depth=0.3, image_size=32)
    probs = [m.p for m in model.modules() if isinstance(m, StochasticDepth)]
    assert probs and max(probs) == pytest.approx(0.3)  # torchvision ramps it up to the last block
    default = build_model("convnext_tiny", 3, image_size=32)
    assert max(m.p for m in default.modules() if isinstance(m, StochasticDepth)) == 0.1
    with pytest.raises(UserError, match=r"stochastic_depth: resnet18 \(ResNet\) has no"):
        build_model("resnet18", 3, stochastic_depth=0.1)

    base = "name: s\ndata: {source: digits, image_size: 16}\nspace:\n"
    everywhere = base + "  backbone: {choice: [resnet18, convnext_tiny]}\n  stochastic_depth: 0.1\n"
    with pytest.raises(UserError) as caught:
        load_space(write_space(everywhere))
    assert "space.yaml:5 (space.stochastic_depth)" in str(caught.value)
    assert "ConvNeXt" in str(caught.value) and "resnet18" in str(caught.value)
    scoped = base + (
        "  backbone:\n    choice:\n      resnet18: {}\n"
        "      convnext_tiny: {stochastic_depth: {uniform: [0.0, 0.2]}}\n"
    )
    assert load_space(write_space(scoped)).params
