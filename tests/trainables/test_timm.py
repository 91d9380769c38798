"""timm backbones: built offline, stages for frozen_depth, their own input
statistics, pretrained weights from a Hugging Face cache this test writes."""

from __future__ import annotations

import sys

import pytest
import torch

from trainables import timm_backbones
from trainables.errors import UserError
from trainables.models import build_model

timm = pytest.importorskip("timm")

# One of each kind: a ResNet, a ConvNeXt (layer-scale gammas), a MobileNet V3
# (pre-logits layer), an EfficientNet, a RegNet, a Swin, a MaxViT and a ViT
# (those two with their own mean and std).
BACKBONES = [
    "timm/resnet10t.c3_in1k",
    "timm/convnext_atto.d2_in1k",
    "timm/mobilenetv3_small_050.lamb_in1k",
    "timm/efficientnet_b0.ra_in1k",
    "timm/regnetx_002.pycls_in1k",
    "timm/swin_tiny_patch4_window7_224.ms_in1k",
    "timm/maxvit_nano_rw_256.sw_in1k",
    "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
]
VIT = BACKBONES[-1]
SIDE = {"timm/maxvit_nano_rw_256.sw_in1k": 64}  # its windows need 64 px; the others take 32


@pytest.mark.parametrize("backbone", BACKBONES)
def test_stages_hold_every_parameter_once_and_frozen_ones_stay_put(backbone):
    torch.manual_seed(0)
    side = SIDE.get(backbone, 32)
    model = build_model(backbone, 3, image_size=side, frozen_depth=2)
    stages = timm_backbones.stages(model.backbone)
    assert 3 <= model.stage_count == len(stages) <= 9
    listed = [id(p) for p in model._frozen_params]
    from trainables.models import _parameters

    every = [id(p) for p in _parameters(stages)]
    assert len(every) == len(set(every))  # no parameter in two stages
    assert set(every) == {id(p) for p in model.backbone.parameters()}  # none left out
    assert listed and all(not p.requires_grad for p in model.frozen_parameters())

    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = {id(p) for p in model.frozen_parameters()}
    frozen_names = {n for n, p in model.named_parameters() if id(p) in frozen}
    frozen_modules = {id(m) for m in model._frozen}
    frozen_buffers = {
        f"{n}.{b}"
        for n, m in model.named_modules()
        if id(m) in frozen_modules
        for b, _ in m.named_buffers(recurse=False)
    } & set(before)  # persistent ones (not a relative-position index)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    images = torch.randn(4, 3, side, side)
    loss = torch.nn.functional.cross_entropy(model(images), torch.arange(4) % 3)
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for name in frozen_names | frozen_buffers:  # weights and BatchNorm statistics
        assert torch.equal(before[name], after[name]), name
    assert not all(torch.equal(before[n], after[n]) for n in before if n.startswith("head."))

    # Every depth freezes exactly the first stages; all (or more) is a linear probe.
    sizes = [sum(p.numel() for p in _parameters([s])) for s in stages]
    for depth in [*range(len(stages) + 1), "all"]:
        frozen_model = build_model(backbone, 3, image_size=side, frozen_depth=depth)
        count = len(stages) if depth == "all" else depth
        frozen_size = sum(p.numel() for p in frozen_model.frozen_parameters())
        assert frozen_size == sum(sizes[:count]), depth
        trainable = sum(p.numel() for p in frozen_model.backbone.parameters() if p.requires_grad)
        assert trainable == sum(sizes[count:]), depth


@pytest.mark.parametrize("backbone", [BACKBONES[1], VIT])
def test_an_exported_timm_model_predicts_as_the_network_did(backbone, tmp_path):
    """Its own mean and std come from the name and are applied at predict too."""
    from search import load_model
    from tests.conftest import model_folder
    from trainables.augment import normalize
    from trainables.data import prepare_image

    torch.manual_seed(3)
    network = build_model(backbone, 3, image_size=32).eval()
    folder = model_folder(tmp_path / "model", ["a", "b", "c"], backbone, 32, network)
    images = [torch.randint(0, 255, (3, 40, 48), dtype=torch.uint8) for _ in range(3)]
    loaded = load_model(folder)
    batch = normalize(torch.stack([prepare_image(i, 32) for i in images]))
    with torch.no_grad():
        expected = network(batch).softmax(1)
    assert torch.allclose(torch.as_tensor(loaded.predict_proba(images)), expected, atol=1e-5)
    assert loaded.network.restandardise == (backbone == VIT)


def test_all_is_a_linear_probe_and_the_vit_takes_its_own_statistics():
    model = build_model(VIT, 2, image_size=32, frozen_depth="all")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    # ImageNet-normalised in, the ViT's (0.5, 0.5) statistics inside.
    raw = torch.rand(2, 3, 32, 32)
    imagenet = (raw - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    model.eval()
    with torch.no_grad():
        ours = model.head(model.backbone((raw - 0.5) / 0.5))
        assert torch.allclose(model(imagenet), ours, atol=1e-5)
    assert "input_scale" not in model.state_dict()  # the name says them; checkpoints unchanged
    cnn = build_model(BACKBONES[0], 2, image_size=32)
    assert not cnn.restandardise  # ImageNet's statistics already


def _hub_cache(tmp_path, monkeypatch, backbone: str, state: dict) -> None:
    """Writes the weights where huggingface_hub's cache keeps them, downloads off."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    repo = timm_backbones.hub_id(backbone)
    folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abcd")
    snapshot = folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_default_weights_load_offline_from_the_hugging_face_cache(tmp_path, monkeypatch):
    backbone = BACKBONES[1]
    torch.manual_seed(1)
    source = timm.create_model(timm_backbones.model_name(backbone))  # with its 1000-class head
    _hub_cache(tmp_path, monkeypatch, backbone, source.state_dict())
    model = build_model(backbone, 3, image_size=32, weights="DEFAULT")
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, source.state_dict()[name]), name

    from search.preflight.weights import fetch, pretrained
    from search.space.loader import load_space

    (tmp_path / "s.yaml").write_text(
        f"data: {{source: digits}}\nspace: {{backbone: {backbone}, weights: DEFAULT}}\n"
    )
    params = load_space(tmp_path / "s.yaml").params
    (item,) = pretrained(params)
    assert item.file.is_file() and "0123abcd" in str(item.file)
    assert [how for _, how in fetch(params)] == ["cached"]


def test_missing_weights_name_the_fix(tmp_path, monkeypatch):
    _hub_cache(tmp_path, monkeypatch, BACKBONES[0], {})
    with pytest.raises(UserError, match="ftsweep weights fetch"):
        build_model(BACKBONES[1], 3, image_size=32, weights="DEFAULT")  # not in the cache


def test_vit_position_embeddings_resized_from_a_weights_file(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(2)
    source = timm.create_model(timm_backbones.model_name(VIT))  # 224 px: 14 x 14 patches
    file = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(file))
    model = build_model(VIT, 3, image_size=48, weights=str(file))  # 3 x 3 patches
    assert model.backbone.pos_embed.shape == (1, 1 + 9, 192)
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 3)


def test_names_and_a_missing_timm(monkeypatch):
    with pytest.raises(UserError, match="did you mean 'timm/convnext_atto'"):
        timm_backbones.check("timm/convnext_atoo")
    with pytest.raises(UserError, match="no pretrained tag 'nope'; its tags: d2_in1k"):
        timm_backbones.check("timm/convnext_atto.nope")
    assert timm_backbones.input_side(VIT, 40) == 48  # a multiple of the patch
    assert timm_backbones.input_side(BACKBONES[0], 40) == 40
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(UserError, match=r"pip install 'ftsweep\[timm\]'"):
        timm_backbones.check(BACKBONES[0])
