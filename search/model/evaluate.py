"""Using a trained model: `evaluate` on labelled images, `predict` on any."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from search.model.calibration import (
    calibration_figures,
    expected_calibration_error,
    reliability,
)
from search.model.figures import default_device
from search.model.loading import load_model
from search.model.predictor import Predictor
from search.outputs.layout import (
    CONFUSION_FILE,
    CONFUSION_PLOT,
    EVALUATION_DIR,
    METRICS_FILE,
    PER_CLASS_FILE,
    PREDICTIONS_FILE,
    RELIABILITY_PLOT,
    SPACE_FILE,
    SPLIT_FILE,
)
from search.outputs.text import spreadsheet_safe
from search.space.loader import load_space
from trainables.data import classes_of, decode_split, read_split
from trainables.errors import UserError
from trainables.scan import IMAGE_EXTENSIONS, scan_class_folders

log = logging.getLogger(__name__)

SHOWN_CLASSES = 30  # a confusion matrix wider than this is only saved, not printed


# --- the finalists: the sweep's top trials on its test split -------------------------


# --- ftsweep evaluate MODEL_DIR DATA ---------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` found: figures, per-class table, confusion matrix, predictions."""

    metrics: dict[str, Any]
    per_class: pd.DataFrame  # class, precision, recall, f1, support
    confusion: pd.DataFrame  # rows: true class, columns: predicted class
    predictions: pd.DataFrame  # path, label, predicted, probability
    out_dir: Path


def evaluate_model(
    model_dir: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    tta: str | None = None,
) -> Evaluation:
    """Scores an exported model on labelled images, with scikit-learn's metrics.

    Args:
        model_dir: an exported model folder.
        data: an ImageFolder (a folder of class folders, or a root with
            train/ val/ test/, of which ``split`` is used) or a sweep's
            results folder (its split.csv's ``split`` rows).
        out_dir: where metrics.json, per_class.csv, confusion_matrix.csv and
            .png, reliability.png and predictions.csv go; default
            MODEL_DIR/evaluation.
        tta: test-time augmentation, "flip" or "crops" (search/model/tta.py).

    The probabilities are the model's (after its temperature); metrics.json's
    ``calibration`` gives the NLL and expected calibration error of the raw
    softmax and of the temperature-scaled one, without test-time augmentation.
    """
    model = load_model(model_dir, device or default_device())
    paths, labels, images, where = _labelled_images(Path(data), split, model.image_size)
    unknown = sorted(set(labels) - set(model.classes))
    if unknown:
        raise UserError(
            f"classes the model does not know: {unknown} (the model knows {model.classes}); "
            "evaluate on data with the classes it was trained on",
            where,
        )
    logits = model.logits(images, batch_size=batch_size)
    if tta:
        probabilities = model.predict_proba(images, batch_size=batch_size, tta=tta)
    else:
        probabilities = (logits.double() / model.temperature).softmax(dim=1).float()
    y_true = np.array([model.classes.index(label) for label in labels])
    y_pred = probabilities.argmax(dim=1).numpy()
    present = sorted(set(y_true) | set(y_pred))  # scikit-learn's default label set
    names = [model.classes[i] for i in present]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=present, zero_division=0
    )
    per_class = pd.DataFrame(
        {"class": names, "precision": precision, "recall": recall, "f1": f1, "support": support}
    )
    metrics = _scores(y_true, y_pred, probabilities, present, where)
    truth = torch.from_numpy(y_true)
    metrics["tta"] = tta
    metrics["ece"] = expected_calibration_error(probabilities, truth)
    metrics["calibration"] = calibration_figures(logits, truth, model.temperature)
    metrics["per_class"] = per_class.set_index("class").to_dict("index")
    matrix = confusion_matrix(y_true, y_pred, labels=present)
    confusion = pd.DataFrame(matrix, index=names, columns=names)
    confusion.index.name = "true \\ predicted"
    predictions = pd.DataFrame(
        {
            "path": paths,
            "label": labels,
            "predicted": [model.classes[i] for i in y_pred],
            "probability": probabilities.max(dim=1).values.numpy().round(6),
        }
    )
    out = Path(out_dir) if out_dir is not None else Path(model_dir) / EVALUATION_DIR
    result = Evaluation(metrics, per_class, confusion, predictions, out)
    _save(result, logits, truth, model.temperature, f"{Path(model_dir).name} on {where}")
    return result


def _save(
    result: Evaluation, logits: torch.Tensor, truth: torch.Tensor, temperature: float, title: str
) -> None:
    """metrics.json, the tables as CSV, the confusion matrix and reliability diagram."""
    from search.outputs.confusion import plot_confusion, plot_reliability

    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(result.metrics, indent=2, default=float) + "\n")
    spreadsheet_safe(result.per_class).to_csv(out / PER_CLASS_FILE, index=False)
    spreadsheet_safe(result.confusion).to_csv(out / CONFUSION_FILE)
    spreadsheet_safe(result.predictions).to_csv(out / PREDICTIONS_FILE, index=False)
    plot_confusion(result.confusion, out / CONFUSION_PLOT, title=title)
    curves = {"softmax": reliability(logits.softmax(dim=1), truth)}
    curves[f"after temperature {temperature:.2f}"] = reliability(
        (logits / temperature).softmax(dim=1), truth
    )
    plot_reliability(curves, out / RELIABILITY_PLOT, title=title)


def _scores(
    y_true: np.ndarray, y_pred: np.ndarray, probabilities: torch.Tensor, present: list, where: str
) -> dict[str, Any]:
    """Accuracy, loss, and macro- and weighted-averaged precision, recall and F1."""
    metrics: dict[str, Any] = {
        "data": where,
        "images": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # The mean of the classes' recalls: what accuracy hides on imbalanced classes.
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "loss": float(
            torch.nn.functional.nll_loss(
                probabilities.clamp_min(1e-12).log(), torch.from_numpy(y_true)
            )
        ),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=present, average=average, zero_division=0
        )
        metrics[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return metrics


def describe_evaluation(result: Evaluation) -> list[str]:
    """The figures as text for the terminal."""
    m = result.metrics
    c = m["calibration"]
    lines = [
        f"{m['images']} images from {m['data']}"
        + (f", test-time augmentation: {m['tta']}" if m.get("tta") else ""),
        f"accuracy  {m['accuracy']:.4f}  balanced accuracy {m['balanced_accuracy']:.4f}",
        f"calibration (temperature {c['temperature']:.3f}): NLL {c['nll_before']:.4f} -> "
        f"{c['nll_after']:.4f}, ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}",
    ]
    for average in ("macro", "weighted"):
        a = m[average]
        lines.append(
            f"{average:<9} precision {a['precision']:.4f}  recall {a['recall']:.4f}  "
            f"f1 {a['f1']:.4f}"
        )
    lines += ["", result.per_class.round(4).to_string(index=False), ""]
    if len(result.confusion) <= SHOWN_CLASSES:
        lines += ["confusion matrix (rows: true class, columns: predicted)"]
        lines += [result.confusion.rename_axis(None).to_string(), ""]
    lines.append(
        f"saved to {result.out_dir}/ (metrics.json, per_class.csv, confusion_matrix.*, "
        "reliability.png)"
    )
    return lines


def _labelled_images(
    data: Path, split: str, image_size: int
) -> tuple[list[str], list[str], torch.Tensor, str]:
    """(paths, labels, uint8 images, where) from an ImageFolder or a sweep's split."""
    if (data / SPACE_FILE).is_file() and (data / SPLIT_FILE).is_file():
        space = load_space(data / SPACE_FILE)
        frame = read_split(data / SPLIT_FILE)
        rows = frame[frame["split"] == split]
        if rows.empty:
            raise UserError(
                f"this sweep has no {split} split (its data.{split}_fraction was 0 and there "
                f"was no {split}/ folder); pass --split val, or an ImageFolder",
                str(data / SPLIT_FILE),
            )
        _, sets = decode_split(rows, space.data.root, image_size)
        names = classes_of(rows)
        labels = [names[i] for i in sets[split].labels.tolist()]
        return rows["path"].tolist(), labels, sets[split].images, f"{data} ({split} split)"
    if not data.is_dir():
        raise UserError(
            "DATA must be an ImageFolder (one folder per class) or a sweep's results folder",
            str(data),
        )
    folder = data / split if (data / "train").is_dir() else data
    if not folder.is_dir():
        raise UserError(
            f"{data} has train/ but no {split}/ folder; pass --split with one it has",
            str(folder),
        )
    scan = scan_class_folders(folder, folder)
    skipped = [p for p in scan.problems if p.kind != "hidden"]
    if skipped:
        log.warning(
            "left out %d files that are not readable images, e.g. %s",
            len(skipped),
            ", ".join(p.path for p in skipped[:3]),
        )
    if scan.items.empty:
        raise UserError("no readable images in the class folders", str(folder))
    paths = [str(folder / p) for p in scan.items["path"]]
    images = torch.stack(_load_all(paths, image_size))
    return paths, scan.items["label"].tolist(), images, str(folder)


def _load_all(paths: Sequence[str], image_size: int) -> list[torch.Tensor]:
    from trainables.data import load_image

    with ThreadPoolExecutor(min(16, (os.cpu_count() or 1) + 2)) as pool:
        return list(pool.map(lambda p: load_image(Path(p), image_size), paths))


# --- ftsweep predict MODEL_DIR IMAGE_OR_DIR... ------------------------------------------


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named, or found (recursively, hidden ones skipped) in named folders."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p
                for p in item.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(item).parts)
            )
            if not found:
                raise UserError(
                    f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder", str(item)
                )
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise UserError("no such file or folder; give image files or folders", str(item))
    return files


def predict_files(
    model: Predictor,
    files: Sequence[Path],
    *,
    top_k: int = 3,
    batch_size: int = 64,
    tta: str | None = None,
) -> pd.DataFrame:
    """One row per file: path, the top-k labels with probabilities, and an error if unreadable.

    Files are decoded in threads a batch at a time; a file that cannot be
    read gets its error in the row, and the others are still predicted.
    """
    k = max(1, min(top_k, len(model.classes)))
    rows: list[dict[str, Any]] = []

    def decode(path: Path) -> torch.Tensor | str:
        try:
            return model.prepare(path)
        except UserError as exc:
            return exc.args[0] if exc.args else str(exc)

    with ThreadPoolExecutor(min(16, (os.cpu_count() or 1) + 2)) as pool:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            decoded = list(pool.map(decode, chunk))
            good = [d for d in decoded if isinstance(d, torch.Tensor)]
            probabilities = (
                model.predict_proba(torch.stack(good), batch_size=batch_size, tta=tta)
                if good
                else None
            )
            position = 0
            for path, item in zip(chunk, decoded, strict=True):
                row: dict[str, Any] = {"path": str(path)}
                if isinstance(item, torch.Tensor):
                    assert probabilities is not None
                    values, indices = probabilities[position].topk(k)
                    position += 1
                    for rank, (p, i) in enumerate(
                        zip(values.tolist(), indices.tolist(), strict=True), 1
                    ):
                        suffix = "" if rank == 1 else f"_{rank}"
                        row[f"label{suffix}"] = model.classes[i]
                        row[f"probability{suffix}"] = round(p, 6)
                    row["error"] = None
                else:
                    row["error"] = item
                rows.append(row)
    columns = ["path"]
    for rank in range(1, k + 1):
        suffix = "" if rank == 1 else f"_{rank}"
        columns += [f"label{suffix}", f"probability{suffix}"]
    return pd.DataFrame(rows).reindex(columns=[*columns, "error"])
