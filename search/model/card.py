"""The model card: README.md in every exported folder, from its model.json and metrics.json.

What the model was trained on (data, classes, split sizes), its configuration,
validation and test figures with the per-class table, calibration, speed with
where it was measured, and the lines that load it in PyTorch and onnxruntime.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from search.outputs.layout import METRICS_FILE, MODEL_FILE

CARD_FILE = "README.md"
SHOWN_CLASSES = 100  # more classes: the card says how many and where the rest are


def write_card(model_dir: Path) -> Path:
    """Writes README.md from the folder's model.json and metrics.json."""
    description = json.loads((model_dir / MODEL_FILE).read_text())
    metrics = json.loads((model_dir / METRICS_FILE).read_text())
    path = model_dir / CARD_FILE
    path.write_text("\n".join(card_lines(description, metrics)) + "\n", encoding="utf-8")
    return path


def card_lines(description: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """The card's markdown, section by section.

    Long: one short block per section, in the order a reader needs them.
    """
    classes = description["classes"]
    onnx = description.get("format") == "onnx"
    members = description.get("members")
    what = (
        f"an ensemble of {len(members)} fine-tuned models (trials "
        + ", ".join(f"`{m['trial_id']}` {m['backbone']}" for m in members)
        + "), averaging their logits after each one's temperature"
        if members
        else f"a fine-tuned `{description['backbone']}` (trial `{description['trial_id']}`, "
        f"epoch {description['epoch']})"
    )
    lines = [
        f"# Model card: {len(classes)}-class image classifier",
        "",
        f"This folder holds {what}, exported by ftsweep"
        + (" as ONNX (model.onnx)." if onnx else " (model.safetensors, model.json)."),
        "",
        "## Data",
        "",
        f"- Trained on: {metrics.get('data', 'not recorded')}",
    ]
    sizes = metrics.get("split_sizes")
    if sizes:
        lines.append(
            f"- Split: {sizes['train']} train, {sizes['val']} validation, {sizes['test']} test "
            "images"
        )
    shown = ", ".join(f"`{c}`" for c in classes[:SHOWN_CLASSES])
    more = (
        f" and {len(classes) - SHOWN_CLASSES} more (model.json)"
        if len(classes) > SHOWN_CLASSES
        else ""
    )
    lines += [f"- Classes ({len(classes)}): {shown}{more}", ""]
    lines += _configuration(description)
    lines += _figures(metrics)
    lines += _calibration(description, metrics)
    lines += _speed(metrics, onnx)
    lines += _usage(description, onnx)
    return lines


def _configuration(description: dict[str, Any]) -> list[str]:
    lines = [
        "## Configuration",
        "",
        f"Input: RGB, resized on the shorter side and centre-cropped to "
        f"{description['image_size']} px.",
        "",
    ]
    configs = (
        [(f"trial `{m['trial_id']}`", m.get("config", {})) for m in description["members"]]
        if description.get("members")
        else [("", description.get("config", {}))]
    )
    for title, config in configs:
        if title:
            lines += [f"{title}:", ""]
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in _flat(config)]
        lines.append("")
    return lines


def _figures(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "## Figures",
        "",
        "| split | accuracy | balanced accuracy | macro F1 | loss |",
        "|---|---|---|---|---|",
    ]
    for name in ("val", "test"):
        scores = metrics.get(name)
        if scores:
            lines.append(
                f"| {'validation' if name == 'val' else 'test'} | {_number(scores, 'accuracy')} "
                f"| {_number(scores, 'balanced_accuracy')} | {_number(scores, 'f1_macro')} "
                f"| {_number(scores, 'loss')} |"
            )
    if not metrics.get("test"):
        lines += ["", "The sweep had no test split (data.test_fraction: 0)."]
    per_class = metrics.get("per_class")
    if per_class:
        split = "test" if per_class["split"] == "test" else "validation"
        lines += [
            "",
            f"Per class, on the {split} split:",
            "",
            "| class | precision | recall | F1 | images |",
            "|---|---|---|---|---|",
        ]
        for name, row in list(per_class["classes"].items())[:SHOWN_CLASSES]:
            lines.append(
                f"| {_cell(name)} | {row['precision']:.4f} | {row['recall']:.4f} "
                f"| {row['f1']:.4f} | {row['support']} |"
            )
    return [*lines, ""]


def _calibration(description: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    temperature = float(description.get("temperature", 1.0))
    lines = [
        "## Calibration",
        "",
        f"Probabilities are softmax(logits / {temperature:.4f}); the temperature was fitted "
        "on the validation split to minimise its negative log-likelihood (NLL). ECE: the "
        "expected calibration error over 15 confidence bins.",
        "",
    ]
    members = description.get("members")
    if members:
        lines[2] = (
            "Each member's logits are divided by its own temperature (fitted on the "
            "validation split) before they are averaged: "
            + ", ".join(f"`{m['trial_id']}` {m['temperature']:.4f}" for m in members)
            + "."
        )
    figures = metrics.get("calibration") or {}
    rows = [(name, figures[name]) for name in ("val", "test") if name in figures]
    if rows:
        lines += [
            "| split | NLL before | NLL after | ECE before | ECE after |",
            "|---|---|---|---|---|",
        ]
        for name, row in rows:
            lines.append(
                f"| {'validation' if name == 'val' else 'test'} | {row['nll_before']:.4f} "
                f"| {row['nll_after']:.4f} | {row['ece_before']:.4f} | {row['ece_after']:.4f} |"
            )
        lines.append("")
    return lines


def _speed(metrics: dict[str, Any], onnx: bool) -> list[str]:
    speed = metrics.get("speed")
    if not speed:
        return []
    return [
        "## Speed",
        "",
        f"{speed['latency_ms']:.2f} ms per image at batch 1; {speed['throughput']:.0f} images/s "
        f"at batch {speed['batch_size']} ({speed['image_size']} px), measured at export with "
        f"PyTorch {speed['torch']} on {speed['device']}, {speed['threads']} threads"
        + (" (onnxruntime's speed was not measured)." if onnx else "."),
        "",
    ]


def _usage(description: dict[str, Any], onnx: bool) -> list[str]:
    size = description["image_size"]
    lines = [
        "## Use it",
        "",
        "In PyTorch (`pip install ftsweep`; also runs model.onnx, through onnxruntime):",
        "",
        "```python",
        "from search import load_model",
        'model = load_model("path/to/this/folder")',
        'print(model.predict(["image.jpg"]), model.predict_proba(["image.jpg"]))',
        "```",
        "",
        "In onnxruntime alone"
        + (
            ":"
            if onnx
            else " (write model.onnx first: `ftsweep export RESULTS/NAME --format onnx --out DIR`):"
        ),
        "",
        "```python",
        "import onnxruntime",
        'session = onnxruntime.InferenceSession("path/to/this/folder/model.onnx")',
        f"logits, probabilities = session.run(None, {{'images': batch}})  # uint8, N x 3 x "
        f"{size} x {size}",
        "```",
        "",
        f"`batch` holds RGB images resized on the shorter side and centre-cropped to {size} px; "
        "the graph normalises them and applies the temperature to `probabilities`.",
    ]
    if onnx and "onnx" in description:
        lines += [
            "",
            f"Checked at export: onnxruntime against PyTorch on "
            f"{description['onnx']['checked_on']} images, largest difference of probabilities "
            f"{description['onnx']['largest_difference']:.1e}.",
        ]
    return lines


def _flat(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in config.items():
        if isinstance(value, dict):
            items += _flat(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _number(scores: dict[str, Any], key: str) -> str:
    value = scores.get(key)
    return f"{value:.4f}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
