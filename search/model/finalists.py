"""At a sweep's end: the top trials by validation, scored on the test split.

The pick stays the one made on validation; the test scores say how far to
trust it (finalists.json, the leaderboard's test columns, report.md).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from search.model.readouts import Readouts
from search.outputs.layout import FINALISTS_FILE, SPLIT_FILE
from search.outputs.leaderboard import read_finalists, usable
from search.outputs.storage import local_checkpoint
from search.space.loader import Space
from trainables.data import read_split
from trainables.loop import scores

log = logging.getLogger(__name__)


def test_finalists(
    sweep_dir: Path, frame: pd.DataFrame, space: Space, readouts: Readouts | None = None
) -> list[dict[str, Any]]:
    """Evaluates the top ``search.finalists`` trials on the test split.

    The pick stays the one made on validation; the test scores say how far to
    trust it. Results go to finalists.json (read by the leaderboard); a trial
    whose best checkpoint was already tested (an earlier end of this sweep) is
    not tested again. ``readouts`` keeps each finalist's network and logits for
    the ensemble and the export that follow (search/model/readouts.py).

    Returns:
        One entry per finalist: rank, trial id, epoch, validation and test metrics.
    """
    split = read_split(sweep_dir / SPLIT_FILE)
    key = f"best_{space.trial.metric}"
    if not space.search.finalists or not (split["split"] == "test").any() or key not in frame:
        return []
    top = usable(frame, space.trial.metric).head(space.search.finalists)
    if top.empty:
        return []
    known = read_finalists(sweep_dir)
    readouts = readouts or Readouts(space, split)
    tested: dict[str, dict[str, Any]] = {}
    for row in top.to_dict("records"):
        trial_id, checkpoint = str(row["trial_id"]), str(row["checkpoint"])
        if known.get(trial_id, {}).get("checkpoint") == checkpoint:
            tested[trial_id] = known[trial_id]
            continue
        if "test" not in readouts.sets:  # deleted since the run: best/ is still written
            return []
        try:
            local = local_checkpoint(sweep_dir, Path(checkpoint))
            _, _, meta = readouts.network(local)
        except Exception as error:  # a damaged checkpoint costs its finalist, not the sweep
            log.warning(
                "finalist %s not tested: %s cannot be read (%s)", trial_id, checkpoint, error
            )
            continue
        test = scores(readouts.logits(local)["test"], readouts.sets["test"][1])
        tested[trial_id] = {"checkpoint": checkpoint, "epoch": meta["epoch"], "test": test}
        log.info(
            "finalist %s: test accuracy %.4f (val %.4f)",
            trial_id,
            test["accuracy"],
            meta.get("val_accuracy", float("nan")),
        )
    staging = sweep_dir / f".{FINALISTS_FILE}.partial"
    staging.write_text(json.dumps(tested, indent=2) + "\n")
    os.replace(staging, sweep_dir / FINALISTS_FILE)
    return [
        {
            "rank": int(row["rank"]),
            "trial_id": str(row["trial_id"]),
            "epoch": tested[str(row["trial_id"])]["epoch"],
            "val": {
                m.removeprefix("best_val_"): row[m]
                for m in row
                if m.startswith("best_val_") and pd.notna(row[m])
            },
            "test": tested[str(row["trial_id"])]["test"],
        }
        for row in top.to_dict("records")
        if str(row["trial_id"]) in tested  # one whose checkpoint cannot be read is left out
    ]
