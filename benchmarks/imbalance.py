"""Which model a sweep picks on imbalanced classes, by the metric it optimises.

A drawn data set with a 95/5 class split (two classes of noisy grey images
whose brightness overlaps, so a model can trade the rare class for accuracy:
an image's mean brightness is drawn from N(120, 12) or N(136, 12))
is swept twice with the same space, seed and trials, `class_weights` among
the searched values: once with `metric: val_accuracy`, once with
`metric: val_balanced_accuracy`. Each sweep's best model is then evaluated on
the sweep's test split; the figure that matters is the rare class's recall.

    python -m benchmarks.imbalance [--trials 8] [--epochs 4] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from search.cli import main as ftsweep

SPACE = """
name: {name}
data: {{manifest: {manifest}, image_size: 16, val_fraction: 0.2, test_fraction: 0.2}}
trial: {{max_epochs: {epochs}, batch_size: 64, precision: fp32, metric: {metric}}}
search: {{num_samples: {trials}, max_concurrent: 2, seed: 0, scheduler: {{type: none}}}}
resources: {{cpus: 1}}
space:
  backbone: squeezenet1_1
  weights: none
  lr: {{loguniform: [1.0e-3, 3.0e-2]}}
  class_weights: {{choice: [none, inverse, sqrt_inverse]}}
  augmentation: none
"""


def draw(folder: Path, common: int = 1900, rare: int = 100) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for label, count, mean in (("common", common, 120.0), ("rare", rare, 136.0)):
        for i in range(count):
            # Each image's brightness is drawn (classes overlap: no model gets
            # both right), then noise per pixel.
            level = rng.normal(mean, 12.0)
            pixels = np.clip(rng.normal(level, 20.0, (16, 16, 3)), 0, 255).astype(np.uint8)
            path = folder / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            rows.append({"path": f"{label}/{i}.png", "label": label})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def sweep(work: Path, manifest: Path, metric: str, args: argparse.Namespace) -> dict:
    name = metric.removeprefix("val_")
    space = work / f"{name}.yaml"
    space.write_text(
        SPACE.format(
            name=name, manifest=manifest, epochs=args.epochs, metric=metric, trials=args.trials
        )
    )
    tic = time.perf_counter()
    assert ftsweep(["run", str(space), "--results", str(work / "results")]) == 0
    seconds = time.perf_counter() - tic
    sweep_dir = work / "results" / name
    out = work / f"eval-{name}"
    assert ftsweep(["evaluate", str(sweep_dir / "best"), str(sweep_dir), "--out", str(out)]) == 0
    per_class = pd.read_csv(out / "per_class.csv").set_index("class")
    best = json.loads((sweep_dir / "best" / "model.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "metric": metric,
        "best_trial": best["trial_id"],
        "class_weights": best["config"].get("class_weights"),
        "lr": best["config"].get("lr"),
        "test_accuracy": round(metrics["accuracy"], 4),
        "test_balanced_accuracy": round(metrics["balanced_accuracy"], 4),
        "test_rare_recall": round(float(per_class.loc["rare", "recall"]), 4),
        "sweep_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = draw(work / "data")
        results = [
            sweep(work, manifest, m, args) for m in ("val_accuracy", "val_balanced_accuracy")
        ]
    report = {"machine": platform.processor() or platform.machine(), "cpu_only": True,
              "trials": args.trials, "epochs": args.epochs, "results": results}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "imbalance-cpu.json").write_text(json.dumps(report, indent=1))
    lines = [
        "# Imbalanced classes (95/5): the model each metric picks",
        "",
        f"Drawn data: 1,900 common and 100 rare 16 px images; {args.trials} trials of "
        f"{args.epochs} epochs per sweep, same space and seed; `class_weights` searched; "
        "test split (20%, stratified). CPU.",
        "",
        "| metric | best trial | class_weights | test accuracy | test balanced accuracy "
        "| rare-class recall | sweep s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['metric']} | {r['best_trial']} | {r['class_weights']} | {r['test_accuracy']} | "
        f"{r['test_balanced_accuracy']} | {r['test_rare_recall']} | {r['sweep_seconds']} |"
        for r in results
    ]
    (args.out / "imbalance-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
