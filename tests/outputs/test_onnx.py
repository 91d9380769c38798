"""ONNX export: round trips through onnxruntime within 1e-4, ONNX folders in load_model."""

from __future__ import annotations

import json

import pytest
import torch

from search import load_model
from search.model.onnx import TOLERANCE
from search.model.onnx_export import convert_to_onnx
from tests.conftest import model_folder
from trainables.errors import UserError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# Whole networks through export, load and predict: a torchvision family for each
# kind of operator (plain convolutions, fire modules, depthwise with hard-swish
# and squeeze-excitation, MNASNet's versioned state dict), timm's CNN and ViT.
FAMILIES = ["squeezenet1_1", "resnet18", "mobilenet_v3_small", "mnasnet0_5",
            "timm/convnext_atto.d2_in1k", "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"]  # fmt: skip


def pytorch_folder(folder, backbone: str):
    torch.manual_seed(0)
    return model_folder(folder, ["c0", "c1", "c2"], backbone, image_size=32)


@pytest.mark.parametrize("backbone", FAMILIES)
def test_each_family_round_trips_through_onnxruntime(backbone, tmp_path):
    source = pytorch_folder(tmp_path / "pt", backbone)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    difference = convert_to_onnx(source, tmp_path / "onnx", images)
    assert difference <= TOLERANCE
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["model.json", "model.onnx"]
    description = json.loads((tmp_path / "onnx" / "model.json").read_text())
    assert description["format"] == "onnx" and description["onnx"]["checked_on"] == 12

    pytorch, onnx = load_model(source), load_model(tmp_path / "onnx")
    assert onnx.classes == pytorch.classes
    pictures = [torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8) for _ in range(5)]
    a, b = pytorch.predict_proba(pictures), onnx.predict_proba(pictures, batch_size=2)
    assert (a - b).abs().max() <= TOLERANCE  # any batch size: the batch axis is dynamic
    assert pytorch.predict(pictures) == onnx.predict(pictures)


def test_a_mismatch_fails_the_export(tmp_path, monkeypatch):
    from search.model import onnx

    source = pytorch_folder(tmp_path / "pt", "squeezenet1_1")
    monkeypatch.setattr(onnx, "TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(UserError, match=r"squeezenet1_1 \(SqueezeNet family\) does not match"):
        convert_to_onnx(source, tmp_path / "onnx", None)
    assert not (tmp_path / "onnx" / "model.onnx").exists()


def test_a_model_the_exporter_cannot_trace_names_its_family_and_operator(tmp_path, monkeypatch):
    source = pytorch_folder(tmp_path / "pt", "squeezenet1_1")

    def refuse(*args, **kwargs):
        raise RuntimeError("No decomposition for operator aten::strange_op.default\nmore")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(UserError) as error:
        convert_to_onnx(source, tmp_path / "onnx", None)
    assert "squeezenet1_1 (SqueezeNet family) cannot be exported to ONNX" in str(error.value)
    assert "aten::strange_op" in str(error.value) and "more" not in str(error.value)
    assert not (tmp_path / "onnx").exists()
