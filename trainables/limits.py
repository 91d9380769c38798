"""Hard limits on what a trial measures (``search.constraints``).

A limit is a bound on a figure: the model's parameter count, its inference
latency or throughput (measured before the first epoch), or a reported
metric (judged at the trial's end on its best value). ``violation`` is
Optuna's convention: zero or less is feasible, and the size of a positive
value says how far off the trial is (relative to the bound, so limits on
parameters and on milliseconds weigh alike).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from trainables import hparams as hp

#: Figures known before the first epoch: a trial that breaks a limit on one stops there.
MEASURED = (hp.PARAMS, hp.LATENCY_MS, hp.THROUGHPUT)
LIMITED = (*MEASURED, *hp.METRICS)  # what search.constraints may bound
INFEASIBLE = "infeasible"  # the result key of a trial stopped by a limit: what broke it
_BOUND = re.compile(r"^\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Limit:
    """``key op bound``, such as params <= 5e6."""

    key: str
    op: str  # "<=" or ">="
    bound: float

    @classmethod
    def parse(cls, key: str, text: object) -> Limit:
        """``Limit.parse("params", "<= 5e6")``; ValueError says what is wrong."""
        if key not in LIMITED:
            raise ValueError(f"{key!r} cannot be limited; limit one of {', '.join(LIMITED)}")
        found = _BOUND.match(str(text)) if isinstance(text, str) else None
        if found is None:
            raise ValueError(
                f"write the limit as '<= NUMBER' or '>= NUMBER' (e.g. \"<= 5e6\"), not {text!r}"
            )
        bound = float(found.group(2))
        if not math.isfinite(bound):
            raise ValueError(f"the bound must be a finite number, not {text!r}")
        return cls(key, found.group(1), bound)

    def violation(self, value: float) -> float:
        """How far ``value`` is past the bound, relative to it (<= 0: within)."""
        gap = value - self.bound if self.op == "<=" else self.bound - value
        return gap / abs(self.bound) if self.bound else gap

    def describe(self, value: float) -> str:
        """``params 11,689,512 > 5e+06``: the figure that broke the limit."""
        shown = f"{int(value):,}" if self.key == hp.PARAMS else f"{value:.4g}"
        broken = ">" if self.op == "<=" else "<"
        return f"{self.key} {shown} {broken} {self.bound:g}"

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.bound:g}"


def broken_limit(limits: tuple[Limit, ...], figures: dict[str, float]) -> str | None:
    """The first limit the figures break, described; None when all hold (or are unknown)."""
    for limit in limits:
        value = figures.get(limit.key)
        if value is not None and math.isfinite(value) and limit.violation(value) > 0:
            return limit.describe(value)
    return None
