"""What calibration, test-time augmentation and the finalists' ensemble change on the test split.

Two sweeps: the quickstart (spaces/quickstart.yaml, scikit-learn's digits) and
a drawn data set (four shapes, outlined, at random places, sizes and grey
levels on noise; 32 px). For each, the best model is evaluated on the sweep's
test split plain, with ``--tta flip`` and with ``--tta crops``; the table
gives the test accuracy of each, the expected calibration error and NLL
before and after the temperature (fitted on validation), and the ensemble of
the finalists (ensemble.json) beside the best alone.

    python -m benchmarks.shipping [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from search.cli import main as ftsweep

SHAPES_SPACE = """
name: shapes
data: {{path: {path}, image_size: 32, val_fraction: 0.2, test_fraction: 0.2, seed: 0}}
trial: {{max_epochs: 5, batch_size: 64, precision: fp32, metric: val_accuracy}}
search: {{num_samples: 6, max_concurrent: 2, seed: 0, scheduler: {{type: none}}}}
resources: {{cpus: 1}}
space:
  backbone: {{choice: [resnet18, mobilenet_v3_small]}}
  weights: none
  lr: {{loguniform: [1.0e-3, 1.0e-2]}}
  optimizer: adamw
  augmentation: none
"""


def draw_shapes(folder: Path, per_class: int = 200) -> Path:
    """Circles, squares, triangles and crosses, outlined, on noise (32 px)."""
    rng = np.random.default_rng(0)
    for label in ("circle", "square", "triangle", "cross"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.normal(110, 35, (32, 32, 3)).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(noise)
            pen = ImageDraw.Draw(image)
            size = int(rng.integers(9, 20))
            x, y = (int(v) for v in rng.integers(1, 31 - size, 2))
            box = (x, y, x + size, y + size)
            ink = tuple(int(v) for v in rng.integers(170, 256, 3))
            if label == "circle":
                pen.ellipse(box, outline=ink, width=2)
            elif label == "square":
                pen.rectangle(box, outline=ink, width=2)
            elif label == "triangle":
                pen.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], outline=ink)
            else:
                pen.line((x, y, x + size, y + size), fill=ink, width=2)
                pen.line((x, y + size, x + size, y), fill=ink, width=2)
            image.save(folder / label / f"{i}.png")
    return folder


def measure(sweep_dir: Path, work: Path, seconds: float) -> dict:
    best = sweep_dir / "best"
    row: dict = {"sweep": sweep_dir.name, "sweep_seconds": round(seconds, 1)}
    for tta in (None, "flip", "crops"):
        out = work / f"eval-{sweep_dir.name}-{tta}"
        flags = ["--tta", tta] if tta else []
        assert ftsweep(["evaluate", str(best), str(sweep_dir), "--out", str(out), *flags]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        row[f"accuracy_{tta or 'plain'}"] = metrics["accuracy"]
        if tta is None:
            row["test_images"] = metrics["images"]
            row["calibration"] = metrics["calibration"]
    ensemble = json.loads((sweep_dir / "ensemble.json").read_text())
    row["ensemble"] = {"members": len(ensemble["members"]), "test": ensemble["test"]["accuracy"],
                       "single_best": ensemble["single_best"]["test"]["accuracy"]}  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        space = work / "shapes.yaml"
        space.write_text(SHAPES_SPACE.format(path=draw_shapes(work / "shapes")))
        for file in ("spaces/quickstart.yaml", str(space)):
            tic = time.perf_counter()
            assert ftsweep(["run", file, "--results", str(work / "results")]) == 0
            name = "quickstart" if "quickstart" in file else "shapes"
            rows.append(measure(work / "results" / name, work, time.perf_counter() - tic))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": platform.processor() or platform.machine(), "rows": rows}
    (args.out / "shipping-cpu.json").write_text(json.dumps(report, indent=1, default=float))
    lines = [
        "# Calibration, test-time augmentation and the finalists' ensemble (test split)",
        "",
        "quickstart: spaces/quickstart.yaml (digits, 32 px). shapes: 800 drawn 32 px images "
        "of four outlined shapes on noise, 6 trials of 5 epochs. CPU.",
        "",
        "| sweep | test images | accuracy | --tta flip | --tta crops | ECE before -> after "
        "| NLL before -> after | temperature | ensemble of finalists | best alone |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        c, e = r["calibration"], r["ensemble"]
        lines.append(
            f"| {r['sweep']} | {r['test_images']} | {r['accuracy_plain']:.4f} | "
            f"{r['accuracy_flip']:.4f} | {r['accuracy_crops']:.4f} | "
            f"{c['ece_before']:.4f} -> {c['ece_after']:.4f} | "
            f"{c['nll_before']:.4f} -> {c['nll_after']:.4f} | {c['temperature']:.3f} | "
            f"{e['test']:.4f} ({e['members']}) | {e['single_best']:.4f} |"
        )
    (args.out / "shipping-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
