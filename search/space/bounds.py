"""One numeric check for every number of a space file, before anything starts.

Every number must be finite (YAML reads ``.inf`` and ``.nan`` as floats, which
then failed deep inside Optuna, Ray or torch), and each setting has a range it
can be met in; the message names the limit. The space: section's values and
ranges get the finite check here and their own ranges in params.py.
"""

from __future__ import annotations

import math
from typing import Any

from search.space.params import Located

SEED_MAX = 2**32 - 1  # numpy's and Optuna's seeds

# "section.key" -> (lowest, highest, why that limit)
BOUNDS: dict[str, tuple[float, float, str]] = {
    "data.image_size": (8, 1024, "pixels on a side; larger images need more memory than a GPU has"),
    "data.seed": (0, SEED_MAX, "a seed is an unsigned 32-bit integer"),
    "search.seed": (0, SEED_MAX, "a seed is an unsigned 32-bit integer"),
    "trial.max_epochs": (1, 10_000, "epochs"),
    "trial.batch_size": (1, 65_536, "images per step"),
    "trial.max_failures": (0, 1_000, "retries"),
    "search.num_samples": (1, 1_000_000, "trials"),
    "search.max_concurrent": (1, 100_000, "trials at once"),
    "search.finalists": (0, 10_000, "trials tested at the end"),
    "search.time_budget": (1, 366 * 86_400, "seconds (a year)"),
    "search.scheduler.grace_period": (1, 10_000, "epochs"),
    "search.scheduler.reduction_factor": (1, 1_000, "ASHA keeps 1 trial in reduction_factor"),
    "resources.cpus": (0, 4_096, "CPUs per trial"),
    # One trial trains on one device: a second GPU booked for it would idle.
    "resources.gpus": (
        0,
        1,
        "a trial trains on one GPU or a fraction of one GPU (0.25, 0.5); "
        "several GPUs per trial are not supported yet",
    ),
}


def check_finite(value: Any, loc: Located, path: str = "", container: Any = None, key: Any = None):
    """Raises at the first number of the document that is infinite or not a number."""
    if isinstance(value, float) and not math.isfinite(value):
        raise loc.error(
            container, key, path or "(top)", f"{path} must be a finite number, not {value}"
        )
    if isinstance(value, dict):
        for name, item in value.items():
            check_finite(item, loc, f"{path}.{name}" if path else str(name), value, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_finite(item, loc, f"{path}[{index}]", value, index)


def check_bound(value: Any, path: str, mapping: Any, key: str, loc: Located) -> None:
    """Raises when a setting is outside the range ftsweep can meet, naming it."""
    if path not in BOUNDS or isinstance(value, bool) or not isinstance(value, int | float):
        return
    low, high, unit = BOUNDS[path]
    if not low <= value <= high:
        raise loc.error(
            mapping,
            key,
            path,
            f"{path} must be between {_n(low)} and {_n(high)} ({unit}); got {_n(value)}",
        )


def _n(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"
