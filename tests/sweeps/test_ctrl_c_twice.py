"""Ctrl-C twice in quick succession (the impatient user): exit 130 with the
leaderboard so far and the resume command, as once gives.

The input: a second SIGINT while Ray ended the run cut its ending short; the
sweep exited 130 with no leaderboard and no resume hint.
"""

from __future__ import annotations

import signal
import time

import pandas as pd
import pytest

from tests.conftest import FAST, reported_epochs, start_ftsweep, stop_group

pytestmark = pytest.mark.slow


def test_ctrl_c_twice_still_leaves_the_leaderboard_and_the_resume_command(tmp_path, notified):
    space = tmp_path / "twice.yaml"
    space.write_text(FAST.replace("max_epochs: 2", "max_epochs: 30"))
    sweep = tmp_path / "results" / "t"
    url, documents = notified
    said = tmp_path / "on-end.txt"
    on_end = f'echo "$FTSWEEP_OUTCOME $FTSWEEP_SWEEP $FTSWEEP_RESUME" > {said}'
    flags = ["--notify", url, "--on-end", on_end]
    driver = start_ftsweep("run", str(space), "--results", str(tmp_path / "results"), *flags)
    try:
        deadline = time.time() + 240
        while not any(reported_epochs(sweep).values()):
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.time() < deadline, "no trial reported an epoch"
            time.sleep(0.25)
        driver.send_signal(signal.SIGINT)
        time.sleep(0.3)
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=180)
    finally:
        stop_group(driver)
    assert driver.returncode == 130, err[-3000:]
    assert f"ftsweep resume {sweep}" in err, err[-3000:]
    board = pd.read_csv(sweep / "leaderboard.csv")
    assert len(board) and board["best_val_accuracy"].notna().any()
    # Word of it: the URL got one document, and the command ran with its fields.
    (document,) = documents
    assert document["outcome"] == "interrupted" and document["sweep"] == "t"
    assert document["resume"] == f"ftsweep resume {sweep}" and document["results"] == str(sweep)
    assert document["best"]["val"]["val_accuracy"] == board["best_val_accuracy"].max()
    assert "interrupted" in document["text"] and sum(document["trials"].values()) == len(board)
    assert said.read_text().split() == ["interrupted", "t", "ftsweep", "resume", str(sweep)]
