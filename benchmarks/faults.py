"""What each fault costs a sweep: trials lost, epochs trained twice, time to resume.

Runs a small CPU sweep (digits at 16 px, mobilenet_v3_small, 4 trials of 5
epochs, 2 at a time) once per fault, through the command line as a user
would, and writes benchmarks/results/faults-<device>.{json,md}.

    make bench-faults      # or: .venv/bin/python -m benchmarks.faults
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from search.outputs.leaderboard import render
from tests.conftest import (
    ftsweep,
    midway,
    reported_epochs,
    saved_progress,
    start_ftsweep,
    stop_group,
)
from trainables.faults import INJECT_ENV

MAX_EPOCHS, TRIALS = 5, 4
SPACE = f"""
name: b
data: {{source: digits, image_size: 16}}
trial: {{max_epochs: {MAX_EPOCHS}, batch_size: 64, precision: fp32, max_failures: 1}}
search: {{num_samples: {TRIALS}, max_concurrent: 2, seed: 3, scheduler: {{type: none}}}}
resources: {{cpus: 1}}
space:
  backbone: mobilenet_v3_small
  weights: none
  lr: {{loguniform: [1.0e-4, 1.0e-2]}}
"""
OUT = Path(__file__).resolve().parent / "results"


def _retrained(epochs: dict[str, list[int]]) -> int:
    """Epochs reported more than once: trained again after the fault."""
    return sum(len(e) - len(set(e)) for e in epochs.values())


def _interrupt(root: Path, how: str) -> dict:
    space = root / "b.yaml"
    space.write_text(SPACE)
    sweep = root / "results" / "b"
    driver = start_ftsweep("run", str(space), "--results", str(root / "results"))
    try:
        while not midway(sweep, MAX_EPOCHS):
            assert driver.poll() is None, driver.communicate()[1][-2000:]
            time.sleep(0.25)
        before = reported_epochs(sweep)
        if how == "SIGINT":
            driver.send_signal(signal.SIGINT)
            driver.communicate(timeout=300)
        else:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=60)
    finally:
        stop_group(driver)
    time.sleep(3)
    if how == "SIGKILL + damaged state":
        state = sorted((sweep / "tune").glob("experiment_state-*.json"))[-1]
        state.write_bytes(state.read_bytes()[:-100])
        running = {t: e for t, (s, e) in saved_progress(sweep).items() if s != "TERMINATED"}
        trial = max(running, key=running.__getitem__)
        restored = sweep / "tune" / f"trial_{trial}" / f"checkpoint_{running[trial] - 1:06d}"
        (restored / "state.pt").write_bytes((restored / "state.pt").read_bytes()[:1000])
    started = time.time()
    resume = start_ftsweep("resume", str(sweep))
    first_new = None
    while resume.poll() is None:
        if first_new is None and sum(map(len, reported_epochs(sweep).values())) > sum(
            map(len, before.values())
        ):
            first_new = time.time() - started
        time.sleep(0.2)
    _, err = resume.communicate()
    assert resume.returncode == 0, err[-2000:]
    after = reported_epochs(sweep)
    return _row(how, sweep, before, after, first_new, time.time() - started)


def _trial_fault(root: Path, kind: str) -> dict:
    space = root / "b.yaml"
    space.write_text(SPACE)
    faults = root / "faults.json"
    fault = {"trial": 0, "epoch": 3, "error": kind}
    if kind == "transient":
        fault["times"] = 1
    faults.write_text(json.dumps([fault]))
    sweep = root / "results" / "b"
    os.environ[INJECT_ENV] = str(faults)
    try:
        run = ftsweep("run", str(space), "--results", str(root / "results"))
    finally:
        del os.environ[INJECT_ENV]
    assert run.returncode == 0, run.stderr[-2000:]
    return _row(f"trial fault: {kind} at epoch 3", sweep, {}, reported_epochs(sweep), None, None)


def _row(fault, sweep, before, after, first_new, resume_s) -> dict:
    board = pd.read_csv(sweep / "leaderboard.csv")
    finished_before = {t for t, e in before.items() if max(e) == MAX_EPOCHS}
    changed = [t for t in finished_before if after.get(t) != before[t]]
    return {
        "fault": fault,
        "trials": len(board),
        "completed": int((board["status"] == "completed").sum()),
        "errored": int((board["status"] == "errored").sum()),
        "finished trials lost or changed": len(changed),
        "epochs retrained": _retrained(after),
        "epochs in all": sum(map(len, after.values())),
        "resume to first new epoch (s)": round(first_new, 1) if first_new else None,
        "resume to end (s)": round(resume_s, 1) if resume_s else None,
        "error shown": "; ".join(board["error"].dropna().astype(str).str[:60]) or "",
    }


def main() -> None:
    rows = []
    for how in ("SIGINT", "SIGKILL", "SIGKILL + damaged state"):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(_interrupt(Path(tmp), how))
            print(rows[-1], flush=True)
    for kind in ("transient", "oom"):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(_trial_fault(Path(tmp), kind))
            print(rows[-1], flush=True)
    device = f"cpu-{os.cpu_count()}cores"
    OUT.mkdir(exist_ok=True)
    meta = {"device": device, "python": sys.version.split()[0], "machine": platform.machine()}
    (OUT / f"faults-{device}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    frame = pd.DataFrame(rows)
    header = f"# Faults on a {TRIALS}-trial sweep ({MAX_EPOCHS} epochs, 2 at a time, {device})\n\n"
    (OUT / f"faults-{device}.md").write_text(header + render(frame, "markdown") + "\n")
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
