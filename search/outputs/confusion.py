"""`ftsweep evaluate`'s plots: the confusion matrix as a heat map (confusion_matrix.png)
and the reliability diagram (reliability.png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from search.outputs.plots import DPI, plt, save_figure


def plot_confusion(confusion: pd.DataFrame, path: Path, *, title: str) -> None:
    """A confusion matrix as a heat map, counts written in the cells (up to 30 classes)."""
    n = len(confusion)
    side = min(14.0, max(5.0, 0.45 * n + 3))
    figure, axes = plt.subplots(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
    matrix = confusion.to_numpy()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, label="images", shrink=0.8)
    axes.set_xticks(range(n), [str(c) for c in confusion.columns], rotation=90 if n > 10 else 0)
    axes.set_yticks(range(n), [str(c) for c in confusion.index])
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    axes.set_title(f"Confusion matrix: {title}\naccuracy {accuracy:.3f}, {matrix.sum()} images")
    if n <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                colour = "white" if count > threshold else "black"
                axes.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=8)
    save_figure(figure, path)


def plot_reliability(curves: dict[str, list[dict[str, float]]], path: Path, *, title: str) -> None:
    """A reliability diagram: accuracy against confidence per bin, one line per
    curve (raw softmax, after the temperature), the diagonal being perfect."""
    figure, axes = plt.subplots(figsize=(5.5, 5.0), dpi=DPI, layout="constrained")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for label, bins in curves.items():
        if bins:
            axes.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker="o",
                markersize=4,
                label=label,
            )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("confidence (top probability), 15 bins")
    axes.set_ylabel("accuracy in the bin")
    axes.set_title(f"Reliability: {title}")
    axes.legend(loc="upper left")
    save_figure(figure, path)
