"""The compact progress view, TensorBoard's HParams and MLflow's runs, without Ray
(the sweep in test_cli checks them end to end)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from search.engine.progress import SweepProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTrial(SimpleNamespace):
    """The parts of Ray's Trial the callbacks read; hashable as Ray's is."""

    __hash__ = object.__hash__


def trial(trial_id: str, status: str = "PENDING", **kwargs) -> SimpleNamespace:
    return FakeTrial(
        trial_id=trial_id,
        status=status,
        last_result=kwargs.get("last_result", {}),
        metric_analysis=kwargs.get("metric_analysis", {}),
        evaluated_params=kwargs.get("params", {"backbone": "resnet18", "lr": 0.00123456}),
        error_file=kwargs.get("error_file"),
        config={},
    )


def view(tty: bool = False, **kwargs) -> tuple[SweepProgress, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    settings = {"metric": "val_accuracy", "mode": "max", "num_samples": 4, "max_epochs": 3}
    progress = SweepProgress(**{**settings, **kwargs}, out=out, tty=tty, clock=clock)
    return progress, out, clock


def result(t: SimpleNamespace, progress: SweepProgress, trials: list, epoch: int, value: float):
    """What Ray does with a result: callbacks first, then the trial's own record."""
    r = {
        "epoch": epoch,
        "val_accuracy": value,
        "time_total_s": 10.0 * epoch,
        "time_this_iter_s": 10.0,
    }
    progress.on_trial_result(0, trials, t, r)
    t.last_result = r
    best = max(value, t.metric_analysis.get("val_accuracy", {}).get("max", value))
    t.metric_analysis = {"val_accuracy": {"max": best, "last": value}}


def test_events_and_counts_in_a_log_file(tmp_path):
    progress, out, clock = view(title="sweep t: 4 trials")
    a, b, c = trial("aaaa", "RUNNING"), trial("bbbb", "RUNNING"), trial("cccc")
    trials = [a, b, c]
    progress.setup()
    progress.on_step_begin(0, trials)
    progress.on_step_end(0, trials)  # the first status line of a log file
    for epoch, (va, vb) in enumerate([(0.5, 0.3), (0.7, 0.31)], start=1):
        clock.now += 10
        result(a, progress, trials, epoch, va)
        result(b, progress, trials, epoch, vb)
    progress.on_trial_complete(0, trials, b)  # ASHA: 2 of 3 epochs
    b.status = "TERMINATED"
    clock.now += 10
    result(a, progress, trials, 3, 0.9)
    progress.on_trial_complete(0, trials, a)
    a.status = "TERMINATED"
    (tmp_path / "error.txt").write_text("Failure # 1\nTraceback...\nValueError: bad image x.png\n")
    c.status, c.error_file = "RUNNING", str(tmp_path / "error.txt")
    progress.on_trial_error(0, trials, c)
    c.status = "ERROR"
    progress.on_experiment_end(trials)
    text = out.getvalue()
    lines = text.splitlines()

    assert "\x1b" not in text and "\r" not in text  # a log file gets no control characters
    assert lines[0].endswith("sweep t: 4 trials")
    assert "0/4 trials done" in lines[1] and "2 running | 1 waiting" in lines[1]
    assert "time left: known after the first epoch" in lines[1]
    events = [line.split(" ", 1)[1] for line in lines]
    assert "stopped    bbbb  early by ASHA at epoch 2: best val_accuracy 0.3100" in events
    assert "finished   aaaa  best val_accuracy 0.9000, 3 epochs" in events
    assert "errored    cccc  ValueError: bad image x.png" in events
    # A new best is announced when a trial ends, with its configuration.
    bests = [e for e in events if e.startswith("new best")]
    assert bests == [
        "new best   bbbb  val_accuracy 0.3100: backbone=resnet18 lr=0.00123",
        "new best   aaaa  val_accuracy 0.9000: backbone=resnet18 lr=0.00123",
    ]
    after_stop = events[events.index(bests[0]) + 1]
    assert after_stop.startswith("1/4 trials done (0 completed, 1 stopped early, 0 errored)")
    assert "best val_accuracy 0.7000 (aaaa)" in after_stop  # the best result so far, running
    assert "~" in after_stop and "left" in after_stop
    assert events[-1].startswith("3/4 trials done (1 completed, 1 stopped early, 1 errored)")
    assert "0 running" in events[-1] and "best val_accuracy 0.9000 (aaaa)" in events[-1]
    # The first, then one per trial that ended; no repeat at the experiment's end.
    assert sum("trials done" in e for e in events) == 4


def test_a_terminal_gets_one_status_line_redrawn_in_place():
    progress, out, clock = view(tty=True)
    a = trial("aaaa", "RUNNING")
    progress.on_step_begin(0, [a])
    for _ in range(3):
        clock.now += 2
        progress.on_step_end(0, [a])
    result(a, progress, [a], 3, 0.8)
    progress.on_trial_complete(0, [a], a)
    a.status = "TERMINATED"
    progress.on_experiment_end([a])
    text = out.getvalue()
    assert text.count("\r\x1b[K0/4 trials done") == 3  # redrawn, never scrolled
    # An event clears the status line, prints, and draws the status line again.
    assert "\r\x1b[K" in text.split("finished   aaaa")[0][-20:]
    assert text.endswith("\n") and "1/4 trials done (1 completed" in text.splitlines()[-1]


def test_time_left_from_epoch_lengths_asha_and_the_budget():
    progress, _, clock = view(
        num_samples=10, max_epochs=6, time_budget_s=3600, grace_period=1, reduction_factor=3
    )
    trials = [trial(f"t{i}", "RUNNING") for i in range(2)]
    progress.on_step_begin(0, trials)
    progress._count(trials)
    assert progress.time_left() == "~1h00m left (time budget)"  # no epoch timed yet
    clock.now += 60
    for t in trials:
        progress.on_trial_result(0, trials, t, {"epoch": 1, "time_this_iter_s": 60.0})
        t.last_result = {"epoch": 1}
    progress._count(trials)
    # ASHA at grace 1, factor 3, 6 epochs: a new trial trains 2 epochs on average;
    # one past the first rung 4, so 3 more. (8 x 2 + 2 x 3) epochs of 60 s, 2 at once.
    assert progress.time_left() == "~11m00s left"
    clock.now += 3240
    assert progress.time_left() == "~5m00s left (time budget)"
    unbounded, _, _ = view(num_samples=10, max_epochs=6)  # no ASHA: every trial trains 6
    unbounded.on_trial_result(0, trials, trials[0], {"epoch": 1, "time_this_iter_s": 60.0})
    unbounded._count(trials)
    assert unbounded.time_left() == "~29m00s left"  # (8 x 6 + 2 x 5) x 60 s / 2


def test_asha_stops_and_time_budget_cuts_are_told_apart_by_the_schedulers_record():
    """Both end TERMINATED short of max_epochs; the clock cannot tell them
    apart (an ASHA stop seconds before the budget's end), ASHA's record can."""
    asha = {"aaaa"}
    progress, out, clock = view(time_budget_s=60, stopped_by_asha=asha.__contains__)
    a, b, c = trial("aaaa", "RUNNING"), trial("bbbb", "RUNNING"), trial("cccc", "RUNNING")
    d = trial("dddd", "RUNNING")
    trials = [a, b, c, d]
    progress.setup()
    for t in trials:
        progress.on_trial_start(0, trials, t)
    clock.now += 58  # within seconds of the budget's end
    for t in trials:
        result(t, progress, trials, 1, 0.5)
    result(c, progress, trials, 3, 0.9)
    for t in trials[:3]:
        progress.on_trial_complete(0, trials, t)
        t.status = "TERMINATED"
    # Ray stops the trials still running at the budget's end without a callback.
    d.status = "TERMINATED"
    progress.on_experiment_end(trials)
    text = out.getvalue()
    assert "stopped    aaaa  early by ASHA at epoch 1" in text
    assert "cut short  bbbb  by the time budget at epoch 1" in text
    assert "finished   cccc" in text
    assert "cut short  dddd  by the time budget at epoch 1: best val_accuracy 0.5000" in text
    assert (
        "4/4 trials done (1 completed, 1 stopped early, 2 cut by the time budget, 0 errored)"
        in text
    )


def test_a_resumed_sweep_starts_from_its_best_so_far():
    progress, out, clock = view()
    done = trial(
        "aaaa",
        "TERMINATED",
        last_result={"epoch": 3, "time_total_s": 30.0},
        metric_analysis={"val_accuracy": {"max": 0.8}},
    )
    running = trial("bbbb", "PENDING", metric_analysis={"val_accuracy": {"max": 0.6}})
    progress.on_step_begin(0, [done, running])
    assert "resumed    2 trials so far; best val_accuracy 0.8000 (aaaa)" in out.getvalue()
    result(running, progress, [done, running], 2, 0.7)
    progress.on_trial_complete(0, [done, running], running)
    assert "new best" not in out.getvalue()  # 0.7 does not beat the restored 0.8
    assert progress.time_left() is not None  # the restored trial's length counts


@pytest.mark.parametrize("mode", ["min"])
def test_lower_is_better_metrics(mode):
    progress, out, _ = view(metric="val_loss", mode=mode)
    a, b = trial("aaaa", "RUNNING"), trial("bbbb", "RUNNING")
    for t, v in ((a, 0.5), (b, 0.2)):
        progress.on_trial_result(0, [a, b], t, {"epoch": 3, "val_loss": v})
        t.last_result = {"epoch": 3, "val_loss": v}
        t.metric_analysis = {"val_loss": {"min": v}}
        progress.on_trial_complete(0, [a, b], t)
    assert progress._best is not None and progress._best.trial_id == "bbbb"
    assert out.getvalue().count("new best") == 2


def test_progress_pickles_without_its_stream():
    import pickle

    progress, _, _ = view()
    progress.out = None
    assert pickle.loads(pickle.dumps(progress)).num_samples == 4


def read_events(folder) -> tuple[set[str], dict, dict]:
    """Scalar tags, HParams values and HParams metrics of a trial's TensorBoard files."""
    import struct

    from tensorboardX.proto import event_pb2, plugin_hparams_pb2

    tags, hparams, metrics = set(), {}, {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + length])
            i += 12 + length + 4
            for value in event.summary.value:
                tags.add(value.tag)
                plugin = value.metadata.plugin_data
                if plugin.plugin_name != "hparams":
                    metrics[value.tag] = value.simple_value
                    continue
                content = plugin_hparams_pb2.HParamsPluginData.FromString(plugin.content)
                if content.HasField("session_start_info"):
                    for key, v in content.session_start_info.hparams.items():
                        hparams[key] = v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                if content.HasField("experiment"):
                    metrics["_hparams_metrics"] = [
                        m.name.tag for m in content.experiment.metric_infos
                    ]
    return tags, hparams, metrics


def test_tensorboard_hparams_carry_the_best_metric(tmp_path):
    from search.engine.tracking import SweepTensorBoard

    logger = SweepTensorBoard("val_accuracy", "max")
    t = trial("aaaa", params={"backbone": "resnet18", "lr": 0.01, "frozen_depth": 0})
    t.local_path, t.init_local_path = str(tmp_path), lambda: None
    for epoch, value in ((1, 0.5), (2, 0.8), (3, 0.7)):
        logger.log_trial_result(
            epoch,
            t,
            {"epoch": epoch, "val_accuracy": value, "done": False, "training_iteration": epoch},
        )
    logger.log_trial_end(t)
    tags, hparams, metrics = read_events(tmp_path)
    assert {"ray/tune/val_accuracy", "ray/tune/best_val_accuracy"} <= tags
    assert hparams == {"backbone": "resnet18", "lr": 0.01, "frozen_depth": 0}
    names = metrics["_hparams_metrics"]
    assert "ray/tune/best_val_accuracy" in names and "ray/tune/done" not in names
    assert metrics["ray/tune/best_val_accuracy"] == pytest.approx(0.8)


def test_mlflow_one_run_per_trial_across_a_resume(tmp_path):
    from mlflow.tracking import MlflowClient

    from search.engine.tracking import SweepMLflow, mlflow_uri

    (tmp_path / "sweep").mkdir()
    uri = mlflow_uri(tmp_path / "sweep", str(tmp_path / "mlruns"))
    assert uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"  # a folder: MLflow's sqlite
    assert mlflow_uri(tmp_path / "sweep", None) == uri  # recorded for `resume`

    a, b = trial("aaaa", params={"lr": 0.01}), trial("bbbb", params={"lr": 0.1})
    for run in range(2):  # the sweep, then its resume with a fresh callback
        logger = SweepMLflow(uri, "flowers", tmp_path / "sweep")
        logger.setup()
        for t in (a, b) if run == 0 else (a,):
            logger.log_trial_start(t)
            logger.log_trial_result(1, t, {"epoch": run + 1, "val_accuracy": 0.5 + run / 10})
            logger.log_trial_end(t)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("flowers")
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["aaaa", "bbbb"]
    assert runs["aaaa"].info.run_name == "flowers-aaaa" and runs["aaaa"].data.params == {
        "lr": "0.01"
    }
    history = client.get_metric_history(runs["aaaa"].info.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6)]
    assert "done" not in runs["aaaa"].data.metrics


def test_mlflow_uri_errors(tmp_path):
    from search.engine.tracking import MLFLOW_FILE, mlflow_uri
    from trainables.errors import UserError

    assert mlflow_uri(tmp_path, None) is None  # the sweep logs to no MLflow
    with pytest.raises(UserError, match="MLflow cannot use the tracking URI nosuch://x"):
        mlflow_uri(tmp_path, "nosuch://x")
    assert not (tmp_path / MLFLOW_FILE).exists()  # only a URI that works is recorded
    (tmp_path / MLFLOW_FILE).write_text("{")
    with pytest.raises(UserError, match="--mlflow URI"):
        mlflow_uri(tmp_path, None)


def test_status_watch_of_a_sweep_whose_trial_has_not_reported(write_space, tmp_path):
    """The first minute of a sweep: Ray lists a running trial with no result yet."""
    import json

    from search.outputs.layout import SPACE_FILE
    from search.outputs.status import watch
    from search.space.loader import load_space
    from tests.conftest import MINIMAL

    sweep = tmp_path / "t"
    (sweep / "tune" / "trial_abc").mkdir(parents=True)
    load_space(write_space(MINIMAL)).dump(sweep / SPACE_FILE)
    (sweep / "tune" / "trial_abc" / "params.json").write_text("{}")
    trial_data = [[json.dumps({"trial_id": "abc", "status": "RUNNING"}), "{}"]]
    state = {"trial_data": trial_data}
    (sweep / "tune" / "experiment_state-2026-11-23_04-00-00.json").write_text(json.dumps(state))
    views = io.StringIO()
    watch(str(sweep), interval=0.01, out=views, refreshes=2)
    text = views.getvalue()
    assert text.count("--- ") == 2 and "\x1b" not in text
    assert "running: trial abc, epoch 0 of 2" in text
    assert "continue 1 unfinished trials (abc from epoch 0)" in text


def test_a_sweep_whose_every_trial_errored_exits_1(tmp_path, capsys):
    """An overnight run that trained nothing must not look like a success."""
    import pandas as pd

    from search.cli.commands import _report
    from search.sweep import SweepResult

    board = pd.DataFrame(
        {
            "rank": [1, 2],
            "trial_id": ["aaaa", "bbbb"],
            "status": ["errored", "errored"],
            "best_val_accuracy": [float("nan")] * 2,
            "error": ["out of memory (resnet50, batch_size 256): CUDA out of memory", None],
        }
    )
    assert _report(SweepResult(tmp_path, board, None, "val_accuracy")) == 1
    err = capsys.readouterr().err
    assert "every trial errored (2); the first error: out of memory (resnet50" in err
    assert f"ftsweep resume {tmp_path} --retry-errored" in err
    board.loc[1, "status"] = "completed"  # one trial trained: a sweep, with an error
    assert _report(SweepResult(tmp_path, board, None, "val_accuracy")) == 0


def test_an_all_errored_sweep_sends_word_and_a_dead_url_changes_nothing(
    tmp_path, capsys, notified, write_space
):
    import argparse

    import pandas as pd

    from search.cli.commands import _ended
    from search.sweep import SweepResult
    from tests.conftest import MINIMAL, dead_url

    write_space(MINIMAL, "space.yaml")
    board = pd.DataFrame({"rank": [1, 2], "trial_id": ["aaaa", "bbbb"],
                          "status": ["errored", "errored"], "gpu_seconds": [0.0, 0.0],
                          "best_val_accuracy": [float("nan")] * 2,
                          "error": ["out of memory (resnet50)", None]})  # fmt: skip
    url, documents = notified
    result = SweepResult(tmp_path, board, None, "val_accuracy")
    assert _ended(result, argparse.Namespace(notify=url, on_end=None)) == 1
    (document,) = documents
    assert document["outcome"] == "all_errored" and document["trials"] == {"errored": 2}
    assert document["best"] is None and document["resume"] == f"ftsweep resume {tmp_path}"
    capsys.readouterr()
    dead = argparse.Namespace(notify=dead_url(), on_end="exit 3")
    assert _ended(result, dead) == 1  # the sweep's code, whatever the notification did
    err = capsys.readouterr().err
    assert "could not notify http://127.0.0.1:" in err and "exited with code 3" in err
