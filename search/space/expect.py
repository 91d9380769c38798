"""What a space's ASHA settings imply: the epochs a trial is expected to train.

Shared by validate's estimates and the progress view's time left.
"""

from __future__ import annotations


def asha_epochs(
    max_epochs: int, grace_period: int | None, reduction_factor: float, reached: int = 0
) -> float:
    """The epochs a trial trains when ASHA stops as designed, on average: to the
    next rung surely, each rung after with chance 1 in ``reduction_factor``.

    ``reached``: epochs the trial has already trained without being stopped
    (0 for a new trial); ``grace_period`` None: no ASHA, every trial trains
    ``max_epochs``.
    """
    if grace_period is None or reached >= max_epochs:
        return float(max_epochs)
    rung = float(grace_period)
    while rung <= reached:  # the rungs it has passed
        rung = min(rung * reduction_factor, max_epochs)
        if rung >= max_epochs:
            return float(max_epochs)
    epochs, survivors = rung, 1.0
    while rung < max_epochs:
        following = min(rung * reduction_factor, max_epochs)
        survivors /= reduction_factor
        epochs += survivors * (following - rung)
        rung = following
    return epochs
