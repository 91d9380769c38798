"""How ftsweep writes durations, clock times and sampled values, everywhere.

The progress view, ``status``, ``validate``'s estimates and report.md share
these, so a duration reads the same wherever the user meets it.
"""

from __future__ import annotations

import math
import time
from typing import Any


def duration(seconds: float) -> str:
    """A duration to the precision that matters: 4.2s, 42s, 12m05s, 3h07m."""
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    hours, rest = divmod(whole, 3600)
    if hours:
        return f"{hours}h{rest // 60:02d}m"
    return f"{rest // 60}m{rest % 60:02d}s"


def clock_time() -> str:
    """The wall clock, as event lines and watch blocks stamp it."""
    return time.strftime("%H:%M:%S")


def short_value(value: object) -> str:
    """A sampled value on a status line: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def size_text(num_bytes: float) -> str:
    """A size in bytes as people read it: 812 KiB, 37.5 MiB, 2.1 GiB."""
    value = max(0.0, float(num_bytes))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: Any) -> Any:
    """A copy of a table whose text cells (and names) cannot run as formulas.

    A cell that starts with = + - @, a tab or a carriage return is run by
    Excel, LibreOffice and Google Sheets as a formula (a class folder named
    ``=cmd|' /C calc'!A0`` would be): it gets a leading ``'``, as OWASP
    advises. Numbers are left alone (-0.5 stays a number).
    """

    def cell(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(FORMULA_STARTS):
            return "'" + value
        return value

    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype.kind == "O":  # object, or pandas 3's str
            safe[column] = safe[column].map(cell)
    safe.columns = safe.columns.map(cell)
    safe.index = safe.index.map(cell)  # keeps the index's name
    return safe


def finite_number(value: Any) -> float | None:
    """A number that is one (not a bool, not NaN) as a float; else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None
