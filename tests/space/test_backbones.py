"""Spaces over many backbones: frozen_depth, stage counts in validate, weights fetch."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from search.cli import main
from search.preflight.weights import fetch, pretrained
from search.space.loader import load_space
from trainables.backbones import stage_count, stage_table

DOCS = Path(__file__).resolve().parents[2] / "docs" / "backbones.md"

MANY = """
name: many
data: {source: digits, image_size: 32}
trial: {max_epochs: 2, batch_size: 32}
space:
  backbone:
    choice:
      resnet18: {weights: {choice: [DEFAULT, IMAGENET1K_V1]}}
      vit_b_16: {weights: IMAGENET1K_SWAG_LINEAR_V1}
      mobilenet_v3_small: {weights: none}
  frozen_depth: {choice: [0, 3, 8, all]}
  unfreeze_at: {int: [0, 2]}
  unfrozen_lr_mult: {loguniform: [0.01, 1.0]}
  mixup_alpha: {choice: [0.0, 0.2]}
  cutmix_alpha: 1.0
  ema: {choice: [0.0, 0.999]}
  grad_clip: {uniform: [0.0, 5.0]}
"""


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_frozen_depth_all_and_the_fine_tuning_options_parse(write_space, torch_home):
    space = load_space(write_space(MANY))
    by_name = {p.name: p for p in _walk(space.params)}
    assert by_name["frozen_depth"].values == (0, 3, 8, "all")
    assert by_name["ema"].values == (0.0, 0.999)
    assert by_name["unfreeze_at"].kind == "int"
    # weights under a backbone's option pair with that backbone only: no SWAG for resnet18
    assert sorted(w.describe() for w in pretrained(space.params)) == [
        "resnet18 ResNet18_Weights.IMAGENET1K_V1",
        "vit_b_16 ViT_B_16_Weights.IMAGENET1K_SWAG_LINEAR_V1",
    ]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("backbone: {choice: [resnet18, resnet7]}", "unknown backbone 'resnet7'"),
        ("backbone: resnet18\n  frozen_depth: most", "takes an integer or all"),
        ("backbone: resnet18\n  frozen_depth: {choice: [0, half]}", "takes an integer or all"),
        ("backbone: resnet18\n  ema: 1.0", "'ema' must be >= 0 and < 1"),
        ("backbone: resnet18\n  weights: {choice: [none, DEFAULT]}", "no"),
        ("backbone: resnet18\n  weights: IMAGENET1K_V9", "choose one of DEFAULT, IMAGENET1K_V1"),
    ],
)
def test_bad_fine_tuning_values_name_the_key(write_space, capsys, line, words):
    text = "name: t\ndata: {source: digits}\nspace:\n  " + line + "\n"
    if words == "no":  # a valid space (control)
        assert main(["validate", str(write_space(text)), "--no-timing"]) == 0
        return
    assert main(["validate", str(write_space(text)), "--no-timing"]) == 2
    err = capsys.readouterr().err
    assert words in err and "space.yaml:" in err
    if "resnet7" in line:
        assert "supported: alexnet, convnext_base" in err and "wide_resnet50_2" in err


def test_validate_prints_stages_clamping_and_missing_weights(write_space, capsys, torch_home):
    assert main(["validate", str(write_space(MANY)), "--no-timing"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v3_small 5, resnet18 5, vit_b_16 5" in out
    assert "frozen_depth up to 8 but resnet18 has 5 stages" in out
    assert "resnet18 ResNet18_Weights.IMAGENET1K_V1 weights are not in the torch cache" in out
    assert "ftsweep weights fetch" in out


def test_weights_fetch_downloads_what_is_missing_and_keeps_what_is_cached(
    write_space, torch_home, monkeypatch, capsys
):
    space = write_space(MANY)
    resnet = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = torch_home / Path(resnet.url).name
    cached.parent.mkdir(parents=True)
    torch.save({"kept": torch.zeros(1)}, cached)
    calls = []

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["weights", "fetch", str(space)]) == 2
    err = capsys.readouterr().err
    assert "could not download 1 of 2 weights files: vit_b_16" in err and "TORCH_HOME" in err
    vit = torchvision.models.ViT_B_16_Weights.IMAGENET1K_SWAG_LINEAR_V1
    assert calls == [(vit.url, Path(vit.url).name.rsplit("-", 1)[1].split(".")[0])]

    def download(url, dst, hash_prefix=None, progress=True):
        torch.save({"downloaded": torch.ones(1)}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    assert main(["weights", "fetch", str(space)]) == 0
    out = capsys.readouterr().out
    assert f"cached     resnet18 {resnet}: {cached}" in out
    assert "downloaded vit_b_16" in out
    assert torch.load(cached)["kept"].shape == (1,)  # untouched
    assert all(how == "cached" for _, how in fetch(load_space(space).params))


def test_docs_list_the_stages_of_every_family():
    """docs/backbones.md carries the table the code would write (stage counts included)."""
    text = DOCS.read_text()
    for family, count, layout, models in stage_table():
        assert f"| {family} | {count} | {layout} | {models} |" in text, family
    assert stage_count("vgg11") == 6 and stage_count("alexnet") == 4


def _walk(params):
    from search.space.params import walk

    return walk(params)
