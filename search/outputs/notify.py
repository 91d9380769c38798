"""Word when a sweep ends: ``--notify URL`` and ``--on-end CMD``.

When a sweep ends (finished, every trial errored, nothing within
search.constraints, or interrupted), one JSON document is POSTed to the URL
with the standard library: Slack's incoming webhooks show its ``text``,
ntfy's topic URLs take the body as the message, anything else gets every
field. ``--on-end CMD`` runs CMD in a shell with the same fields in
``FTSWEEP_*`` environment variables (and the whole document in
``FTSWEEP_PAYLOAD``). Neither can fail the sweep: a failure is logged and
said on stderr, and the exit code stays the sweep's.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from search.outputs.layout import STATUSES
from search.space.params import walk

log = logging.getLogger(__name__)

TIMEOUT_S = 10  # the URL's answer; a sweep's end never waits on it longer
ON_END_TIMEOUT_S = 300
OUTCOMES = {0: "completed", 130: "interrupted"}


def outcome(code: int, frame: pd.DataFrame) -> str:
    """completed, interrupted, all_errored, nothing_feasible (or failed)."""
    if code in OUTCOMES:
        return OUTCOMES[code]
    if len(frame) and (frame["status"] == "errored").all():
        return "all_errored"
    if "feasible" in frame and len(frame) and not frame["feasible"].any():
        return "nothing_feasible"
    return "failed"


def payload(
    sweep_dir: Path, frame: pd.DataFrame, space: Any, best_dir: Path | None, ended: str
) -> dict[str, Any]:
    """The document: sweep, outcome, best trial (configuration, val and test
    figures), trials by status, GPU-hours, where the results are, how to resume."""
    metric = space.trial.metric
    counts = frame["status"].value_counts() if len(frame) else pd.Series(dtype=int)
    gpu_seconds = frame["gpu_seconds"].sum() if "gpu_seconds" in frame else 0.0
    best = None
    picked = frame[frame["feasible"].astype(bool)] if "feasible" in frame else frame
    key = f"best_{metric}"
    if best_dir is not None and len(picked) and key in picked and picked[key].notna().any():
        row = picked[picked[key].notna()].iloc[0]
        columns = dict.fromkeys(p.column for p in walk(space.params))
        best = {
            "trial_id": str(row["trial_id"]),
            "config": {
                c: _plain(row[c]) for c in columns if c in row and _plain(row[c]) is not None
            },
            "val": {metric: _plain(row[key])},
            "test": {
                c.removeprefix("test_"): _plain(row[c])
                for c in row.index
                if c.startswith("test_") and _plain(row[c]) is not None
            },
            "model": str(best_dir),
        }
    document = {
        "sweep": space.name,
        "outcome": ended,
        "best": best,
        "trials": {s: int(counts.get(s, 0)) for s in STATUSES if counts.get(s, 0)},
        "gpu_hours": round(float(gpu_seconds) / 3600, 4),
        "results": str(sweep_dir),
        "resume": f"ftsweep resume {sweep_dir}",
    }
    document["text"] = _text(document, metric)
    return document


def _text(document: dict[str, Any], metric: str) -> str:
    best = document["best"]
    trials = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in document["trials"].items())
    line = f"ftsweep sweep {document['sweep']}: {document['outcome'].replace('_', ' ')}"
    line += f" ({trials or 'no trials'})"
    if best:
        line += f"; best {best['trial_id']} {metric} {best['val'][metric]:.4f}"
        if "accuracy" in best["test"]:
            line += f", test accuracy {best['test']['accuracy']:.4f}"
    if document["outcome"] == "interrupted":
        line += f"; continue with: {document['resume']}"
    return line + f"; results: {document['results']}"


def _plain(value: Any) -> Any:
    """A leaderboard cell as JSON takes it (None for blanks)."""
    if value is None or pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def send(document: dict[str, Any], url: str | None, command: str | None) -> None:
    """POSTs the document to ``url`` and runs ``command``; failures are said, never raised."""
    if url:
        body = json.dumps(document, default=str).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
                log.info("notified %s (HTTP %s)", url, answer.status)
        except (urllib.error.URLError, OSError, ValueError) as error:
            _said(f"could not notify {url}: {getattr(error, 'reason', error)}")
    if command:
        env = os.environ | _environment(document)
        try:
            done = subprocess.run(command, shell=True, env=env, timeout=ON_END_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as error:
            _said(f"--on-end {command!r} failed: {error}")
            return
        if done.returncode:
            _said(f"--on-end {command!r} exited with code {done.returncode}")


def _environment(document: dict[str, Any]) -> dict[str, str]:
    best = document["best"] or {}
    return {
        "FTSWEEP_SWEEP": document["sweep"],
        "FTSWEEP_OUTCOME": document["outcome"],
        "FTSWEEP_RESULTS": document["results"],
        "FTSWEEP_RESUME": document["resume"],
        "FTSWEEP_GPU_HOURS": str(document["gpu_hours"]),
        "FTSWEEP_BEST_TRIAL": best.get("trial_id", ""),
        "FTSWEEP_BEST_VAL": json.dumps(best.get("val", {})),
        "FTSWEEP_BEST_TEST": json.dumps(best.get("test", {})),
        "FTSWEEP_TRIALS": json.dumps(document["trials"]),
        "FTSWEEP_TEXT": document["text"],
        "FTSWEEP_PAYLOAD": json.dumps(document, default=str),
    }


def _said(message: str) -> None:
    log.warning(message)
    print(f"ftsweep: {message} (the sweep itself is unaffected)", file=sys.stderr)
