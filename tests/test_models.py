"""Model building: heads, freezing, BatchNorm statistics, pretrained weights."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from trainables.errors import UserError
from trainables.models import build_model, cached_weights_file, stage_count
from trainables.optim import build_optimizer

FAMILIES = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "vit_b_16"]


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("backbone", FAMILIES)
def test_frozen_stages_stay_frozen(backbone):
    torch.manual_seed(0)
    depth = 2
    model = build_model(backbone, 3, frozen_depth=depth, head_hidden=8, image_size=32)
    family_stages = stage_count(backbone)
    assert family_stages >= 4
    before = _snapshot(model)
    optimizer = build_optimizer(model, "sgd", lr=0.1, momentum=0.9)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    after = model.state_dict()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert frozen and trainable
    # frozen parameters and every buffer of frozen modules (BN running stats) unchanged
    for name in frozen:
        assert torch.equal(before[name], after[name]), name
    frozen_modules = {id(m) for m in model._frozen}
    for mod_name, module in model.named_modules():
        if id(module) in frozen_modules:
            for buf_name, buf in module.named_buffers():
                assert torch.equal(before[f"{mod_name}.{buf_name}"], buf), (mod_name, buf_name)
    assert any(not torch.equal(before[n], after[n]) for n in trainable)
    # frozen parameters get no optimizer state
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(p) not in in_optimizer for p in model.parameters() if not p.requires_grad)
    assert model(images).shape == (4, 3)


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


def test_missing_weights_offline_names_the_file(torch_home):
    with pytest.raises(UserError) as info:
        build_model("resnet18", 4, weights="DEFAULT")
    expected = cached_weights_file(torchvision.models.ResNet18_Weights.DEFAULT)
    assert str(expected) in str(info.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_a_state_dict_file(tmp_path, suffix):
    reference = torchvision.models.mobilenet_v3_small()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = build_model("mobilenet_v3_small", 3, weights=str(path))
    assert torch.equal(model.backbone.features[0][0].weight, reference.features[0][0].weight)


def test_state_dict_of_another_architecture_is_rejected(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    with pytest.raises(UserError, match="does not match"):
        build_model("resnet18", 3, weights=str(path))


def test_unknown_backbone_lists_supported():
    with pytest.raises(UserError, match="supported: .*resnet50"):
        build_model("alexnet2", 3)
