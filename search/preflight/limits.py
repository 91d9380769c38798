"""What ``ftsweep validate`` can tell about search.constraints before any trial runs."""

from __future__ import annotations

import torch

from search.space.loader import Space
from trainables import hparams as hp
from trainables.models import build_model


def limit_warnings(space: Space, backbones: list[str], classes: int) -> list[str]:
    """A warning where no backbone of the space can meet a limit on parameters.

    Each backbone is built on the meta device (no memory, no weights) with
    the smallest head (a linear one) for the data's classes: if even that
    breaks ``params <= N``, every trial of it stops before its first epoch.
    Latency and throughput depend on the device a trial runs on: each trial
    measures them before its first epoch.
    """
    found = []
    for limit in space.search.constraints:
        if limit.key != hp.PARAMS or limit.op != "<=":
            continue
        counts = {b: _params(b, classes, space.data.image_size) for b in backbones}
        over = {b: n for b, n in counts.items() if n is not None and limit.violation(n) > 0}
        if not over:
            continue
        listed = ", ".join(f"{b} {n / 1e6:.1f} M" for b, n in sorted(over.items()))
        if len(over) == len(backbones):
            found.append(
                f"no backbone of the space can meet search.constraints {limit} ({listed}, with "
                "a linear head): every trial would stop before its first epoch. Add smaller "
                "backbones or loosen the limit"
            )
        else:
            found.append(
                f"{listed} cannot meet search.constraints {limit}: their trials stop before "
                "their first epoch (infeasible); drop them from the space to spend no trial"
            )
    return found


def _params(backbone: str, classes: int, image_size: int) -> int | None:
    try:
        with torch.device("meta"):
            model = build_model(backbone, classes, image_size=image_size)
    except Exception:  # noqa: BLE001 - a backbone validate cannot build is reported elsewhere
        return None
    return sum(p.numel() for p in model.parameters())
