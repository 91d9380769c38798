"""Calibration, test-time augmentation, ensembles and the model card, without a sweep.

The sweep-level checks (the temperature fitted at export, the ensemble of a
sweep's finalists, report.md's line) are in tests/sweeps/test_sweep.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from search import load_model
from search.model.calibration import (
    BINS,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    nll,
)
from search.model.card import card_lines
from search.model.networks import Ensemble
from search.model.tta import views
from tests.conftest import model_folder
from trainables.errors import UserError


def over_confident(count: int = 2000, classes: int = 5, seed: int = 0):
    """Logits of a model right about 70% of the time that says ~99%."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (count,), generator=generator)
    right = torch.rand(count, generator=generator) < 0.7
    predicted = torch.where(
        right, labels, (labels + torch.randint(1, classes, (count,), generator=generator)) % classes
    )
    logits = torch.randn(count, classes, generator=generator)
    logits[torch.arange(count), predicted] += 8.0  # far too sure of itself
    return logits, labels


def test_the_temperature_of_an_over_confident_model_lowers_its_nll():
    logits, labels = over_confident()
    temperature = fit_temperature(logits, labels)
    assert temperature > 2  # it softens the probabilities
    assert nll(logits, labels, temperature) < 0.6 * nll(logits, labels)
    # The minimum: a little hotter or colder is worse.
    for other in (temperature * 0.9, temperature * 1.1):
        assert nll(logits, labels, other) > nll(logits, labels, temperature)
    figures = calibrate(logits, labels)
    assert figures["ece_after"] < figures["ece_before"] / 3
    assert figures["nll_after"] < figures["nll_before"]
    # The predictions do not change: the order of each row's logits is kept.
    assert torch.equal((logits / temperature).argmax(1), logits.argmax(1))


def test_a_calibrated_model_keeps_a_temperature_near_one():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4000, 4, generator=generator) * 2
    labels = torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)
    assert fit_temperature(logits[:0], labels[:0]) == 1.0  # nothing to fit on


def test_ece_is_the_weighted_gap_of_confidence_and_accuracy_per_bin():
    probabilities = torch.tensor(
        [[0.95, 0.05], [0.95, 0.05], [0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]]
    )
    labels = torch.tensor([0, 0, 0, 1, 0, 0])
    # Bin of 0.95: 4 images, confidence 0.95, accuracy 3/4. Bin of 0.55: 2 images,
    # confidence 0.55, accuracy 1/2 (the second is predicted 1, labelled 0).
    assert int(0.95 * BINS) != int(0.55 * BINS)
    expected = (4 * abs(0.95 - 0.75) + 2 * abs(0.55 - 0.5)) / 6
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected)
    assert expected_calibration_error(torch.eye(3), torch.arange(3)) == 0.0  # sure and right


def calibrated_folder(tmp_path, temperature: float, backbone: str = "resnet18", seed: int = 0):
    torch.manual_seed(seed)
    folder = model_folder(tmp_path / f"model-{temperature}-{seed}", ["a", "b", "c"], backbone)
    description = json.loads((folder / "model.json").read_text())
    description["temperature"] = temperature
    (folder / "model.json").write_text(json.dumps(description))
    return folder


def test_the_temperature_is_applied_in_predict_proba_and_predict(tmp_path):
    model = load_model(calibrated_folder(tmp_path, 3.5))
    assert model.temperature == 3.5
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    logits = model.logits(images)
    assert torch.allclose(model.predict_proba(images), (logits / 3.5).softmax(1), atol=1e-6)
    assert model.predict(images) == [model.classes[i] for i in logits.argmax(1)]
    raw = load_model(calibrated_folder(tmp_path, 1.0))
    assert torch.allclose(raw.logits(images), logits)  # same weights: only T differs
    assert torch.allclose(raw.predict_proba(images), logits.softmax(1), atol=1e-6)


@pytest.mark.parametrize("value", [0, -1.0, 1000.0, "warm", None])
def test_a_bad_temperature_is_named(tmp_path, value):
    with pytest.raises(UserError, match="temperature must be a number from 0.05 to 100"):
        load_model(calibrated_folder(tmp_path, value))


def test_the_onnx_graph_applies_the_temperature(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from search.model.onnx_export import convert_to_onnx

    source = calibrated_folder(tmp_path, 2.5, "squeezenet1_1")
    convert_to_onnx(source, tmp_path / "onnx", None)
    assert json.loads((tmp_path / "onnx" / "model.json").read_text())["temperature"] == 2.5
    pytorch, onnx = load_model(source), load_model(tmp_path / "onnx")
    assert onnx.temperature == 2.5
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    expected = (pytorch.logits(images) / 2.5).softmax(1)
    assert (onnx.predict_proba(images) - expected).abs().max() <= 1e-4
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    logits, probabilities = session.run(None, {"images": images.numpy()})
    assert (torch.from_numpy(probabilities) - expected).abs().max() <= 1e-4  # in the graph
    assert (torch.from_numpy(logits) - pytorch.logits(images)).abs().max() <= 1e-4  # raw


@pytest.mark.parametrize(("kind", "count"), [("flip", 2), ("crops", 6)])
def test_tta_is_the_mean_of_the_per_view_predictions(tmp_path, kind, count):
    model = load_model(calibrated_folder(tmp_path, 1.7))
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    made = views(images, kind)
    assert len(made) == count and all(v.shape == images.shape for v in made)
    assert torch.equal(made[1], images.flip(-1))
    per_view = [model.predict_proba(view) for view in made]  # each view as plain images
    expected = torch.stack(per_view).mean(0)
    assert torch.allclose(model.predict_proba(images, tta=kind), expected, atol=1e-6)
    assert torch.allclose(model.predict_proba(images, tta=kind, batch_size=2), expected, atol=1e-6)
    assert not torch.allclose(expected, per_view[0], atol=1e-4)  # the views differ
    assert model.predict(images, tta=kind) == [model.classes[i] for i in expected.argmax(1)]


def test_the_command_line_offers_the_tta_kinds_there_are():
    from search.cli.parser import TTA_CHOICES, build_parser
    from search.model.tta import TTA_CHOICES as KINDS

    assert TTA_CHOICES == KINDS
    for command in ("evaluate", "predict"):
        args = build_parser().parse_args([command, "model", "data", "--tta"])
        assert args.tta == "flip"
        assert build_parser().parse_args([command, "model", "data"]).tta is None


def test_crops_are_corners_of_the_image_scaled_back():
    image = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    image[..., :8, :8] = 255  # the top-left quarter white
    top_left, top_right = views(image, "crops")[2:4]
    assert top_left[0, 0, 0, 0] == 255 and top_left[0, 0, -1, -1] == 0
    assert top_right[0, 0, 0, -1] == 0 and top_right[0, 0, 0, 0] == 255
    with pytest.raises(ValueError, match="one of"):
        views(image, "rotate")


def test_an_ensemble_is_the_mean_of_its_members_calibrated_logits():
    torch.manual_seed(0)
    members = [torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)]
    ensemble = Ensemble(members, [2.0, 0.5])
    inputs = torch.randn(7, 4)
    expected = (members[0](inputs) / 2.0 + members[1](inputs) / 0.5) / 2
    assert torch.allclose(ensemble(inputs), expected)
    assert set(ensemble.state_dict()) == {
        f"members.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")
    }
    with pytest.raises(ValueError, match="one temperature per member"):
        Ensemble(members, [1.0])


def ensemble_folder(tmp_path, count: int = 2):
    """An ensemble folder written as export --ensemble writes one (untrained members)."""
    sources = [calibrated_folder(tmp_path, 1.0 + i, seed=i) for i in range(count)]
    loaded = [load_model(s) for s in sources]
    folder = tmp_path / "ensemble"
    folder.mkdir()
    network = Ensemble([m.network for m in loaded], [m.temperature for m in loaded])
    import safetensors.torch

    weights = {k: v.contiguous() for k, v in network.state_dict().items()}
    safetensors.torch.save_file(weights, str(folder / "model.safetensors"))
    members = []
    for number, source in enumerate(sources):
        member = json.loads((source / "model.json").read_text())
        members.append(
            {key: member[key] for key in ("backbone", "head", "model", "temperature")}
            | {"trial_id": f"t{number}", "epoch": 3, "config": {"lr": 0.01}}
        )
    description = {"format_version": 2, "backbone": "ensemble", "members": members,
                   "classes": ["a", "b", "c"], "image_size": 16, "temperature": 1.0}  # fmt: skip
    (folder / "model.json").write_text(json.dumps(description))
    return folder, loaded


def test_an_ensemble_folder_loads_and_predicts_as_the_mean_of_its_members(tmp_path):
    folder, members = ensemble_folder(tmp_path)
    model = load_model(folder)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    mean = torch.stack([m.logits(images) / m.temperature for m in members]).mean(0)
    assert torch.allclose(model.logits(images), mean, atol=1e-6)
    assert torch.allclose(model.predict_proba(images), mean.softmax(1), atol=1e-6)

    description = json.loads((folder / "model.json").read_text())
    description["members"][1]["temperature"] = -2
    (folder / "model.json").write_text(json.dumps(description))
    with pytest.raises(UserError, match=r"members\[1\].temperature must be a number"):
        load_model(folder)
    description["members"] = []
    (folder / "model.json").write_text(json.dumps(description))
    with pytest.raises(UserError, match="members must be a list"):
        load_model(folder)
    description["members"] = [{"backbone": "resnet_9000"}]
    (folder / "model.json").write_text(json.dumps(description))
    with pytest.raises(UserError, match=r"members\[0\].backbone.*'resnet_9000' is not a backbone"):
        load_model(folder)


def test_the_card_names_the_figures_it_is_given():
    description = {"backbone": "resnet18", "trial_id": "abc_00001", "epoch": 4,
                   "classes": ["cat", "dog"], "image_size": 64, "temperature": 1.8321,
                   "config": {"lr": 0.003, "optimizer": {"name": "adamw"}}}  # fmt: skip
    calibration = {"nll_before": 0.91, "nll_after": 0.42, "ece_before": 0.2345,
                   "ece_after": 0.0312, "temperature": 1.8321, "images": 40}  # fmt: skip
    metrics = {
        "data": "photos/ (an image folder)",
        "split_sizes": {"train": 160, "val": 40, "test": 50},
        "val": {"accuracy": 0.875, "balanced_accuracy": 0.87, "f1_macro": 0.86, "loss": 0.4},
        "test": {"accuracy": 0.8123, "balanced_accuracy": 0.81, "f1_macro": 0.8, "loss": 0.5},
        "calibration": {"val": calibration},
        "per_class": {"split": "test", "classes": {
            "cat": {"precision": 0.9, "recall": 0.7, "f1": 0.7875, "support": 30},
            "dog": {"precision": 0.6923, "recall": 0.9, "f1": 0.7826, "support": 20}}},
        "speed": {"latency_ms": 3.21, "throughput": 812.4, "batch_size": 32, "image_size": 64,
                  "device": "CPU (Test CPU)", "threads": 2, "torch": "2.14.1"},
    }  # fmt: skip
    card = "\n".join(card_lines(description, metrics))
    for text in (
        "`resnet18` (trial `abc_00001`, epoch 4)",
        "Trained on: photos/ (an image folder)",
        "160 train, 40 validation, 50 test",
        "Classes (2): `cat`, `dog`",
        "| test | 0.8123 |",
        "| validation | 0.8750 |",
        "| cat | 0.9000 | 0.7000 | 0.7875 | 30 |",
        "softmax(logits / 1.8321)",
        "| validation | 0.9100 | 0.4200 | 0.2345 | 0.0312 |",
        "3.21 ms per image at batch 1; 812 images/s at batch 32",
        "CPU (Test CPU)",
        "| optimizer.name | adamw |",
        "load_model(",
        "onnxruntime.InferenceSession(",
    ):
        assert text in card, text
