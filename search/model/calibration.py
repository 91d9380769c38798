"""Temperature scaling (Guo et al., 2017): one number fitted on the validation split.

Fine-tuned networks are over-confident: their softmax says 0.99 where they are
right nine times in ten. Dividing the logits by a temperature T > 1 fitted to
minimise the validation negative log-likelihood makes the probabilities
honest without changing any prediction (the order of the logits is kept).
The fit is a few steps of torch's L-BFGS on log T.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional

BINS = 15  # equal-width confidence bins of the expected calibration error
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 100.0


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels``
    under softmax(logits / T); 1.0 where there is nothing to fit on."""
    if len(labels) == 0:
        return 1.0
    logits, labels = logits.detach().double(), labels.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        return 1.0
    temperature = min(max(temperature, MIN_TEMPERATURE), MAX_TEMPERATURE)
    # L-BFGS may stop where the loss is flat; never return a temperature worse than 1.
    return temperature if nll(logits, labels, temperature) <= nll(logits, labels, 1.0) else 1.0


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    return float(functional.cross_entropy(logits.double() / temperature, labels.long()))


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """ECE: the images' weighted mean gap between confidence (the top
    probability) and accuracy over ``BINS`` equal-width confidence bins."""
    if len(labels) == 0:
        return float("nan")
    confidence, predicted = probabilities.double().max(dim=1)
    correct = (predicted == labels).double()
    bins = torch.clamp((confidence * BINS).long(), max=BINS - 1)  # 1.0 goes in the top bin
    total = 0.0
    for b in bins.unique().tolist():
        members = bins == b
        total += float(members.sum()) * abs(
            float(confidence[members].mean()) - float(correct[members].mean())
        )
    return total / len(labels)


def reliability(probabilities: torch.Tensor, labels: torch.Tensor) -> list[dict[str, float]]:
    """Per confidence bin with images: its range, mean confidence, accuracy and count
    (the reliability diagram's bars)."""
    confidence, predicted = probabilities.double().max(dim=1)
    correct = (predicted == labels).double()
    bins = torch.clamp((confidence * BINS).long(), max=BINS - 1)
    rows = []
    for b in bins.unique().tolist():
        members = bins == b
        rows.append(
            {
                "low": b / BINS,
                "high": (b + 1) / BINS,
                "confidence": float(confidence[members].mean()),
                "accuracy": float(correct[members].mean()),
                "count": int(members.sum()),
            }
        )
    return rows


def calibration_figures(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> dict[str, Any]:
    """NLL and ECE of raw softmax and of the temperature-scaled one."""
    labels = labels.long()
    return {
        "temperature": temperature,
        "images": len(labels),
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, temperature),
        "ece_before": expected_calibration_error(logits.softmax(dim=1), labels),
        "ece_after": expected_calibration_error((logits / temperature).softmax(dim=1), labels),
    }


def calibrate(logits: torch.Tensor, labels: torch.Tensor, split: str = "val") -> dict[str, Any]:
    """The fitted temperature and its figures on the split it was fitted on
    (model.json's ``calibration``)."""
    temperature = fit_temperature(logits, labels)
    return {"split": split} | calibration_figures(logits, labels, temperature)
