"""End to end, in process: a real sweep with Ray Tune, Optuna and ASHA."""

from __future__ import annotations

import io
import itertools
import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from search.model.export import load_model
from search.outputs.leaderboard import build_leaderboard
from search.sweep import run_sweep
from trainables.checkpoints import load_state
from trainables.data import decode_split, read_split
from trainables.errors import UserError
from trainables.hparams import HParams
from trainables.models import build_model

pytestmark = pytest.mark.slow

# ShuffleNet V2 x0.5: the fastest torchvision backbone that learns the digits at
# 16 px in two epochs (val accuracy 0.66; resnet18 0.82 in five times the time;
# squeezenet1_1 does not learn them).
BACKBONE = "shufflenet_v2_x0_5"

# One good learning rate and a hopeless one: the first trial (good) and the
# second (hopeless) start together; the third (hopeless) reaches ASHA's first
# rung after both, below the cutoff, so ASHA must stop it.
SPACE = f"""
name: e2e
data: {{source: digits, image_size: 16, val_fraction: 0.15, test_fraction: 0.15}}
trial: {{max_epochs: 2, batch_size: 32, metric: val_accuracy, precision: fp32}}
search:
  num_samples: 4
  max_concurrent: 2
  sampler: tpe
  seed: 1
  start_from:
    - {{lr: 3.0e-3, optimizer: adamw, head_hidden: 0, weight_decay: 1.0e-3}}
    - {{lr: 1.0e-7, optimizer: adamw}}
    - {{lr: 1.0e-7, optimizer: sgd}}
  scheduler: {{type: asha, grace_period: 1, reduction_factor: 2}}
resources: {{cpus: 1}}
space:
  backbone: {BACKBONE}
  weights: none
  head_hidden: {{choice: [0, 32]}}
  lr: {{choice: [3.0e-3, 1.0e-7]}}
  lr_scheduler: none
  augmentation: none
  optimizer:
    choice:
      adamw: {{weight_decay: {{loguniform: [1e-4, 1e-2]}}}}
      sgd: {{momentum: {{uniform: [0.8, 0.9]}}}}
"""


@pytest.fixture(scope="module")
def sweep(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    space = root / "e2e.yaml"
    space.write_text(SPACE)
    return run_sweep(space, results=root / "results")


def test_leaderboard_has_one_row_per_trial(sweep):
    board = pd.read_csv(sweep.sweep_dir / "leaderboard.csv")
    assert len(board) == 4
    assert board["trial_id"].is_unique
    assert list(board["rank"]) == [1, 2, 3, 4]
    assert board["best_val_accuracy"].is_monotonic_decreasing
    for column in (
        "lr",
        "optimizer",
        "optimizer/weight_decay",
        "best_epoch",
        "epochs",
        "train_seconds",
        "params",
        "checkpoint",
        "last_val_loss",
        "status",
    ):
        assert column in board
    assert board.iloc[0]["best_val_accuracy"] > 0.5
    assert board.iloc[0]["lr"] == pytest.approx(3e-3)


def test_asha_stopped_a_trial_early(sweep):
    board = sweep.leaderboard
    stopped = board[board["status"] == "stopped_early"]
    assert len(stopped) >= 1
    assert (stopped["epochs"] < 2).all()
    assert (board[board["status"] == "completed"]["epochs"] == 2).all()


def test_trials_ran_concurrently(sweep):
    spans = sweep.leaderboard[["started_at", "ended_at"]].to_numpy()
    overlaps = [min(a[1], b[1]) - max(a[0], b[0]) for a, b in itertools.combinations(spans, 2)]
    assert max(overlaps) > 1.0  # seconds during which two trials trained at once


def test_conditional_parameters_only_when_chosen(sweep):
    for params in (sweep.sweep_dir / "tune").glob("trial_*/params.json"):
        config = json.loads(params.read_text())
        if config["optimizer"] == "adamw":
            assert "optimizer.adamw.weight_decay" in config
            assert not any(k.startswith("optimizer.sgd") for k in config)
        else:
            assert "optimizer.sgd.momentum" in config
            assert not any(k.startswith("optimizer.adamw") for k in config)
    board = sweep.leaderboard
    sgd = board[board["optimizer"] == "sgd"]
    assert len(sgd) >= 1 and sgd["optimizer/weight_decay"].isna().all()


def test_split_is_written_once_and_stratified(sweep):
    split = read_split(sweep.sweep_dir / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    assert len(split) == 1797


def test_best_model_predicts_like_its_checkpoint(sweep):
    best = sweep.leaderboard.iloc[0]
    model = load_model(sweep.best_dir)
    assert model.classes == [str(i) for i in range(10)]
    assert not model.training
    state = load_state(Path(best["checkpoint"]))
    reference = build_model(BACKBONE, 10, head_hidden=int(best["head_hidden"]), image_size=16)
    reference.load_state_dict(state["model"])
    reference.eval()
    _, sets = decode_split(read_split(sweep.sweep_dir / "split.csv"), None, 16)
    images = sets["test"].images[:64]
    logits = reference(
        (images.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    )
    description = json.loads((sweep.best_dir / "model.json").read_text())
    assert description["temperature"] == model.temperature != 1.0  # fitted on val
    expected = (logits / model.temperature).softmax(1)  # calibrated probabilities
    assert torch.allclose(model.predict_proba(images), expected, atol=1e-5)
    assert model.predict(list(images[:3])) == [model.classes[i] for i in expected[:3].argmax(1)]
    metrics = json.loads((sweep.best_dir / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] == pytest.approx(best["best_val_accuracy"])
    assert "test" in metrics


def test_export_is_reproducible(sweep, tmp_path):
    from search.model.export import export_trial

    export_trial(sweep.sweep_dir, tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (
        sweep.best_dir / "model.safetensors"
    ).read_bytes()
    again = build_leaderboard(sweep.sweep_dir, finished=True)
    assert list(again["trial_id"]) == list(sweep.leaderboard["trial_id"])


def test_leaderboard_has_cost_and_inference_speed(sweep):
    board = sweep.leaderboard
    trained = board[board["epochs"].notna()]
    assert (trained["latency_ms"] > 0).all() and (trained["throughput"] > 0).all()
    assert (trained["device"] == "cpu").all()
    assert (trained["gpu_seconds"] == 0).all()  # resources.gpus is 0
    assert (trained["params"] > 0).all()


def test_finalists_are_tested_on_the_test_split(sweep):
    board = sweep.leaderboard
    finalists = json.loads((sweep.sweep_dir / "finalists.json").read_text())
    assert len(finalists) == 3  # search.finalists defaults to 3
    assert set(finalists) == set(board["trial_id"].head(3))
    assert board["test_accuracy"].head(3).notna().all()
    assert board["test_accuracy"].iloc[3:].isna().all()  # the pick is made on validation
    metrics = json.loads((sweep.best_dir / "metrics.json").read_text())
    assert [f["trial_id"] for f in metrics["finalists"]] == list(board["trial_id"].head(3))
    assert metrics["test"]["accuracy"] == pytest.approx(board.iloc[0]["test_accuracy"])
    assert metrics["finalists"][0]["test"] == finalists[board.iloc[0]["trial_id"]]["test"]


def _checkpoint_probabilities(row, images, temperature, *, logits=False):
    state = load_state(Path(row["checkpoint"]))
    reference = build_model(BACKBONE, 10, head_hidden=int(row["head_hidden"]), image_size=16)
    reference.load_state_dict(state["model"])
    reference.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        raw = reference((images.float() / 255 - mean) / std)
    return raw if logits else (raw / temperature).softmax(1)


def test_export_of_a_non_best_trial_round_trips(sweep, tmp_path):
    from search.model.export import export_trial

    row = sweep.leaderboard.iloc[1]  # not the best
    first = export_trial(sweep.sweep_dir, tmp_path / "first", trial_id=row["trial_id"])
    again = export_trial(sweep.sweep_dir, tmp_path / "again", trial_id=row["trial_id"])
    assert (first / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    description = json.loads((first / "model.json").read_text())
    assert description["trial_id"] == row["trial_id"]
    model = load_model(first)
    _, sets = decode_split(read_split(sweep.sweep_dir / "split.csv"), None, 16)
    images = sets["test"].images[:50]
    expected = _checkpoint_probabilities(row, images, description["temperature"])
    assert torch.allclose(model.predict_proba(images, batch_size=16), expected, atol=1e-5)
    with pytest.raises(UserError, match="no trial 'nope'"):
        export_trial(sweep.sweep_dir, tmp_path / "x", trial_id="nope")


def test_evaluate_agrees_with_scikit_learn(sweep, tmp_path):
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    from search.model.evaluate import evaluate_model

    result = evaluate_model(sweep.best_dir, sweep.sweep_dir, out_dir=tmp_path / "eval")
    # Independently: the test split's images through the model, scored by scikit-learn.
    split = read_split(sweep.sweep_dir / "split.csv")
    test = split[split["split"] == "test"]
    _, sets = decode_split(test, None, 16)
    model = load_model(sweep.best_dir)
    truth = [str(i) for i in sets["test"].labels.tolist()]  # digits' classes are "0".."9"
    predicted = model.predict(sets["test"].images)
    assert result.metrics["images"] == len(test)
    assert result.metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            truth, predicted, average=average, zero_division=0
        )
        assert result.metrics[average] == pytest.approx({"precision": p, "recall": r, "f1": f})
    labels = sorted(set(truth) | set(predicted))
    p, r, f, s = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    assert result.per_class["class"].tolist() == labels
    assert result.per_class["precision"].tolist() == pytest.approx(list(p))
    assert result.per_class["recall"].tolist() == pytest.approx(list(r))
    assert result.per_class["support"].tolist() == list(s)
    saved = pd.read_csv(tmp_path / "eval" / "confusion_matrix.csv", index_col=0)
    assert saved.to_numpy().tolist() == confusion_matrix(truth, predicted, labels=labels).tolist()
    assert saved.columns.tolist() == labels
    assert len(pd.read_csv(tmp_path / "eval" / "predictions.csv")) == len(test)
    assert _png_size(tmp_path / "eval" / "confusion_matrix.png")[0] > 500
    # Calibration: the NLL before and after the model's temperature, the ECE, the diagram.
    from search.model.calibration import expected_calibration_error, nll

    logits = model.logits(sets["test"].images)
    labels = torch.tensor([int(t) for t in truth])
    calibration = result.metrics["calibration"]
    assert calibration["temperature"] == model.temperature
    assert calibration["nll_before"] == pytest.approx(nll(logits, labels), rel=1e-4)
    assert calibration["nll_after"] == pytest.approx(
        nll(logits, labels, model.temperature), rel=1e-4
    )
    assert result.metrics["ece"] == pytest.approx(
        expected_calibration_error((logits / model.temperature).softmax(1), labels), abs=1e-6
    )
    assert _png_size(tmp_path / "eval" / "reliability.png")[0] > 500


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def test_plots_and_report_are_written(sweep):
    from search.outputs.plots import PLOTS

    for name in PLOTS:
        assert _png_size(sweep.sweep_dir / "plots" / f"{name}.png") == (1080, 660), name
    report = (sweep.sweep_dir / "report.md").read_text()
    for name in PLOTS:
        assert f"(plots/{name}.png)" in report
    assert "## Finalists on the test split" in report
    assert sweep.leaderboard.iloc[0]["trial_id"] in report
    assert "Epochs trained:" in report
    assert "of 2 trial slots x the wall time" in report  # max_concurrent 2, both used


def test_image_folder_evaluate_and_predict(sweep, tmp_path, capsys):
    from PIL import Image

    from search.cli import main

    # Three digits of each class as PNG files in class folders, and one broken file.
    split = read_split(sweep.sweep_dir / "split.csv")
    test = split[split["split"] == "test"]
    _, sets = decode_split(test, None, 16)
    folder = tmp_path / "digits"
    written = {}
    for index, (image, label) in enumerate(
        zip(sets["test"].images, sets["test"].labels, strict=True)
    ):
        name = str(int(label))
        if written.get(name, 0) < 3:
            (folder / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / name / f"{index}.png")
            written[name] = written.get(name, 0) + 1
    assert main(["evaluate", str(sweep.best_dir), str(folder), "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "30 images" in out and "accuracy" in out and "confusion matrix" in out

    preds = tmp_path / "preds.csv"
    assert main(["predict", str(sweep.best_dir), str(folder), "--out", str(preds)]) == 0
    frame = pd.read_csv(preds)
    assert len(frame) == 30 and frame["error"].isna().all()
    assert {"label", "probability", "label_2", "probability_3"} <= set(frame.columns)
    assert (frame["probability"] >= frame["probability_2"]).all()
    model = load_model(sweep.best_dir)
    assert frame["label"].astype(str).tolist() == model.predict(frame["path"].tolist())

    (folder / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["predict", str(sweep.best_dir), str(folder), "--out", str(preds)]) == 2
    assert "1 of 31 files could not be read" in capsys.readouterr().err
    frame = pd.read_csv(preds)
    assert len(frame) == 31  # every file has its row; the others were predicted
    broken = frame[frame["path"].str.endswith("broken.png")].iloc[0]
    assert pd.isna(broken["label"]) and "cannot read" in broken["error"]


def test_leaderboard_filters(sweep, capsys):
    from search.cli import main

    assert main(["leaderboard", str(sweep.sweep_dir), "--format", "json", "--pareto"]) == 0
    front = pd.DataFrame(json.loads(capsys.readouterr().out))
    board = sweep.leaderboard
    assert 1 <= len(front) <= len(board)
    # JSON carries 15 digits: compare the trials' own values
    for row in board[board["trial_id"].isin(front["trial_id"])].itertuples():
        # no trial is both faster and better
        better = board[
            (board["latency_ms"] <= row.latency_ms)
            & (board["best_val_accuracy"] > row.best_val_accuracy)
        ]
        assert better.empty
    assert (
        main(["leaderboard", str(sweep.sweep_dir), "--status", "stopped_early", "--format", "csv"])
        == 0
    )
    shown = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(shown) >= 1 and (shown["status"] == "stopped_early").all()
    assert main(["leaderboard", str(sweep.sweep_dir), "--status", "finished"]) == 2
    assert main(["leaderboard", str(sweep.sweep_dir), "--sort", "latency_ms", "--top", "2"]) == 0


def test_data_decoded_once_and_reused_workers_reset_cleanly(sweep):
    import dataclasses

    from search.engine.tuner import trial_setup
    from search.space.loader import load_space
    from trainables.finetune import train

    tune_dir = sweep.sweep_dir / "tune"
    results = {
        p.parent.name: [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
        for p in tune_dir.glob("trial_*/result.json")
    }
    # The driver decoded the images into the sweep's cache; no trial decoded any.
    assert len(list((sweep.sweep_dir / "cache").glob("images-16px-*.u8"))) == 1
    assert {(r["images_decoded"], r["data"]) for rs in results.values() for r in rs} == {
        (0, "cache")
    }
    # Ray ran later trials in the workers of earlier ones (reuse_actors) ...
    pids = {name: rs[0]["pid"] for name, rs in results.items()}
    assert len(set(pids.values())) < len(pids)
    order = sorted(results, key=lambda name: results[name][0]["started_at"])
    reused = next(n for i, n in enumerate(order) if pids[n] in {pids[m] for m in order[:i]})
    # ... and such a trial computes what a fresh process computes for its config.
    space = load_space(sweep.sweep_dir / "space.yaml")
    config = json.loads((tune_dir / reused / "params.json").read_text())
    setup = dataclasses.replace(trial_setup(space, sweep.sweep_dir), max_epochs=1)
    fresh: list[dict] = []
    train(HParams.from_mapping(space.hparams(config)), setup, report=lambda m, d: fresh.append(m))
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert fresh[0][key] == pytest.approx(results[reused][0][key], rel=1e-6, abs=1e-9)


def test_the_sweeps_end_reads_and_runs_each_finalist_once(sweep, tmp_path, monkeypatch):
    """The finalists' test scores, their ensemble and best/ share one reading of
    each checkpoint and one pass over val and test (search/model/readouts.py):
    before, the best trial's checkpoint was read three times and run five times."""
    import shutil

    from search.model import readouts
    from search.sweep import finish_sweep

    copy = tmp_path / "e2e"
    shutil.copytree(sweep.sweep_dir, copy, ignore=shutil.ignore_patterns("best", "cache"))
    (copy / "finalists.json").unlink()
    read, run = [], []
    network, logits = readouts.checkpoint_network, readouts.split_logits
    monkeypatch.setattr(
        readouts, "checkpoint_network", lambda *a: read.append(a[1].parent.name) or network(*a)
    )
    monkeypatch.setattr(readouts, "split_logits", lambda *a: run.append(sorted(a[1])) or logits(*a))
    result = finish_sweep(copy)
    finalists = [f"trial_{t}" for t in result.leaderboard["trial_id"].head(3)]
    assert sorted(read) == sorted(finalists)  # each once
    assert run == [["test", "val"]] * 3
    assert json.loads((copy / "ensemble.json").read_text())["members"] == [
        name.removeprefix("trial_") for name in finalists
    ]
    assert json.loads((result.best_dir / "model.json").read_text())["trial_id"] == finalists[0][6:]


def test_an_unreadable_best_checkpoint_costs_its_trial_not_the_sweeps_end(sweep, tmp_path, caplog):
    """The fault: the best trial's checkpoint damaged before the sweep's end.
    The finalists step skipped it and then indexed it anyway (KeyError, exit 1,
    best/ and report.md not rewritten); export failed. Now the next-best trial
    is tested and exported, and the skipped one is named."""
    import shutil

    from search.sweep import finish_sweep

    copy = tmp_path / "e2e"
    shutil.copytree(sweep.sweep_dir, copy, ignore=shutil.ignore_patterns("best", "cache"))
    (copy / "finalists.json").unlink()
    board = build_leaderboard(copy, finished=True)
    ranked = board[board["best_val_accuracy"].notna() & board["checkpoint"].notna()]
    best, runner_up = ranked.iloc[0], ranked.iloc[1]
    assert str(best["checkpoint"]).startswith(str(copy))  # the copy's own trial folders
    (Path(best["checkpoint"]) / "state.pt").write_bytes(b"not a checkpoint")
    with caplog.at_level("WARNING"):
        result = finish_sweep(copy)
    assert result.best_dir is not None
    exported = json.loads((result.best_dir / "model.json").read_text())
    assert exported["trial_id"] == runner_up["trial_id"]
    assert f"finalist {best['trial_id']} not tested" in caplog.text
    assert f"exporting the next best, trial {runner_up['trial_id']}" in caplog.text
    assert (copy / "report.md").is_file()


@pytest.fixture
def read_only(tmp_path):
    """A folder nothing can be written to: a tmpfs remounted read-only where this
    test runs as root (root ignores permissions), else a folder without write bits."""
    import os
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = os.geteuid() == 0 and (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "ftsweep-ro", str(folder)],
                       capture_output=True, check=False).returncode == 0
    )  # fmt: skip
    if os.geteuid() == 0 and not mounted:
        pytest.skip("cannot make a read-only folder as root without mounting one")

    def seal() -> None:
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            for path in [folder, *folder.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)

    yield folder, seal
    if mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


def test_a_read_only_results_folder_is_one_paragraph_for_every_command(sweep, read_only, capsys):
    """The fault: a results folder on a read-only mount; run, plot, export,
    evaluate and resume ended in OSError tracebacks."""
    import shutil

    from search.cli import main

    folder, seal = read_only
    copy = folder / "e2e"
    shutil.copytree(sweep.sweep_dir, copy, ignore=shutil.ignore_patterns("cache"))
    (folder / "new.yaml").write_text(SPACE)
    seal()
    commands = [
        ["run", str(folder / "new.yaml"), "--results", str(folder / "results")],
        ["plot", str(copy)],
        ["export", str(copy), "--out", str(folder / "exported")],
        ["evaluate", str(copy / "best"), str(copy)],
        ["resume", str(copy)],
    ]
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "cannot write here" in err and "Traceback" not in err, (command, err[-2000:])


def test_a_driver_killed_during_the_sweeps_end_is_resumable_and_says_so(sweep, tmp_path, capsys):
    """The fault: SIGKILL while the finalists were tested; `status` said
    "finished, not resumable", though `resume` completes the end."""
    import shutil

    from search.cli import main

    copy = tmp_path / "e2e"
    shutil.copytree(sweep.sweep_dir, copy, ignore=shutil.ignore_patterns("cache"))
    shutil.rmtree(copy / "best")  # what a kill during the finalists leaves
    (copy / "finalists.json").unlink()
    assert main(["status", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "not the sweep's end" in out and f"`ftsweep resume {copy}` would test" in out, out
    assert main(["resume", str(copy)]) == 0, capsys.readouterr().err[-2000:]
    assert (copy / "best" / "model.json").is_file()
    capsys.readouterr()
    assert main(["status", str(copy)]) == 0
    assert "resumable: no, the sweep has finished" in capsys.readouterr().out


def test_test_images_deleted_before_the_end_cost_the_test_scores_not_best(sweep, tmp_path, caplog):
    """The fault: files deleted between run and resume; the trials finished and
    then the finalists step exited 2 with best/ stale. Now best/ is written,
    without test scores, and the reason is named."""
    import shutil

    import yaml

    from search.sweep import finish_sweep

    copy = tmp_path / "e2e"
    shutil.copytree(sweep.sweep_dir, copy, ignore=shutil.ignore_patterns("best", "cache"))
    (copy / "finalists.json").unlink()
    (tmp_path / "photos").mkdir()  # the data folder, its test images gone
    split = read_split(copy / "split.csv")
    test = split["split"] == "test"
    split.loc[test, "path"] = [
        f"{label}/gone{i}.png" for i, label in enumerate(split.loc[test, "label"])
    ]
    split.to_csv(copy / "split.csv", index=False)
    for name in ("space.yaml", "space.original.yaml"):
        saved = yaml.safe_load((copy / name).read_text())
        saved["data"] = {"path": str(tmp_path / "photos"), "image_size": 16}
        (copy / name).write_text(yaml.safe_dump(saved))
    with caplog.at_level("WARNING"):
        result = finish_sweep(copy)
    assert result.best_dir is not None and (result.best_dir / "model.safetensors").is_file()
    assert "no test scores: the test images cannot be read" in caplog.text
    assert "test" not in json.loads((result.best_dir / "metrics.json").read_text())


def test_onnx_export_and_predict_give_the_pytorch_rows(sweep, tmp_path, capsys, caplog):
    pytest.importorskip("onnxruntime")
    from search.cli import main

    out = tmp_path / "onnx"
    caplog.set_level(logging.INFO)  # as the command line logs
    assert main(["export", str(sweep.sweep_dir), "--format", "onnx", "--out", str(out)]) == 0
    assert "onnxruntime against PyTorch" in capsys.readouterr().out
    chatter = [r.getMessage() for r in caplog.records if r.name.startswith(("onnx", "torch"))]
    assert not chatter  # the ONNX optimizer's passes, one line each, without the fix
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",  # the model card
        "metrics.json",
        "model.json",
        "model.onnx",
    ]
    description = json.loads((out / "model.json").read_text())
    assert description["onnx"]["checked_on"] == 64  # the test split's first images
    assert description["onnx"]["largest_difference"] <= 1e-4

    split = read_split(sweep.sweep_dir / "split.csv")
    _, sets = decode_split(split[split["split"] == "test"], None, 16)
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image

    for index, image in enumerate(sets["test"].images[:10]):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index}.png")
    rows = {}
    for name, model in (("pytorch", sweep.best_dir), ("onnx", out)):
        csv = tmp_path / f"{name}.csv"
        assert main(["predict", str(model), str(folder), "--out", str(csv)]) == 0
        rows[name] = pd.read_csv(csv)
    assert rows["pytorch"]["label"].tolist() == rows["onnx"]["label"].tolist()
    assert (rows["pytorch"]["probability"] - rows["onnx"]["probability"]).abs().max() <= 1e-4
    evaluated = tmp_path / "evaluated"
    assert main(["evaluate", str(out), str(sweep.sweep_dir), "--out", str(evaluated)]) == 0
    onnx_metrics = json.loads((evaluated / "metrics.json").read_text())
    assert onnx_metrics["images"] == len(sets["test"])


def test_the_finalists_ensemble_is_scored_and_exports_as_the_mean_of_their_logits(
    sweep, tmp_path, capsys
):
    from search.cli import main

    board = sweep.leaderboard
    summary = json.loads((sweep.sweep_dir / "ensemble.json").read_text())
    assert summary["members"] == list(board["trial_id"].head(3))  # the finalists
    assert summary["single_best"]["trial_id"] == board.iloc[0]["trial_id"]
    report = (sweep.sweep_dir / "report.md").read_text()
    assert "**Ensemble of the 3 finalists**" in report
    assert f"test accuracy {summary['test']['accuracy']:.4f}" in report
    from search.cli.commands import _report

    assert _report(sweep) == 0  # the sweep's last lines say it too
    said = capsys.readouterr().out
    assert f"ensemble of the 3 finalists: test accuracy {summary['test']['accuracy']:.4f}" in said
    assert "--ensemble 3 --out DIR" in said and "its model card: README.md" in said

    out = tmp_path / "ensemble"
    assert main(["export", str(sweep.sweep_dir), "--ensemble", "2", "--out", str(out)]) == 0
    assert "top 2 trials" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "metrics.json", "model.json", "model.safetensors"]  # fmt: skip
    description = json.loads((out / "model.json").read_text())
    members = description["members"]
    assert [m["trial_id"] for m in members] == list(board["trial_id"].head(2))
    assert description["backbone"] == "ensemble" and description["temperature"] == 1.0
    # Independently: each member's checkpoint, its logits over its temperature, averaged.
    _, sets = decode_split(read_split(sweep.sweep_dir / "split.csv"), None, 16)
    images = sets["test"].images[:40]
    logits = [
        _checkpoint_probabilities(board.iloc[i], images, 1.0, logits=True) / m["temperature"]
        for i, m in enumerate(members)
    ]
    expected = torch.stack(logits).mean(0)
    model = load_model(out)
    assert torch.allclose(model.logits(images), expected, atol=1e-5)
    assert torch.allclose(model.predict_proba(images), expected.softmax(1), atol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    truth = sets["test"].labels
    all_logits = model.logits(sets["test"].images)
    assert metrics["test"]["accuracy"] == pytest.approx(
        float((all_logits.argmax(1) == truth).double().mean())
    )
    assert "an ensemble of 2 fine-tuned models" in (out / "README.md").read_text()
    evaluated = tmp_path / "evaluated"
    assert main(["evaluate", str(out), str(sweep.sweep_dir), "--out", str(evaluated)]) == 0
    assert json.loads((evaluated / "metrics.json").read_text())["accuracy"] == pytest.approx(
        metrics["test"]["accuracy"]
    )

    pytest.importorskip("onnxruntime")
    onnx = tmp_path / "ensemble-onnx"
    argv = ["export", str(sweep.sweep_dir), "--ensemble", "2", "--format", "onnx", "--out"]
    assert main([*argv, str(onnx)]) == 0
    assert (load_model(onnx).predict_proba(images) - expected.softmax(1)).abs().max() <= 1e-4


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--ensemble", "1"], "--ensemble takes 2 or more trials"),
        (["--ensemble", "99"], r"at most the \d+ with a checkpoint"),
        (["--ensemble", "2", "--trial", "x"], "give --trial or --ensemble, not both"),
    ],
)
def test_an_impossible_ensemble_is_one_paragraph(sweep, tmp_path, capsys, flags, words):
    from search.cli import main

    out = tmp_path / "never"
    assert main(["export", str(sweep.sweep_dir), *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(words, err) and "Traceback" not in err
    assert not out.exists()


def test_the_best_models_card_names_its_figures(sweep):
    card = (sweep.best_dir / "README.md").read_text()
    metrics = json.loads((sweep.best_dir / "metrics.json").read_text())
    description = json.loads((sweep.best_dir / "model.json").read_text())
    best = sweep.leaderboard.iloc[0]
    split = read_split(sweep.sweep_dir / "split.csv")
    counts = split["split"].value_counts()
    assert f"`{BACKBONE}` (trial `{best['trial_id']}`" in card
    assert f"{counts['train']} train, {counts['val']} validation, {counts['test']} test" in card
    assert "Classes (10): `0`, `1`" in card
    assert f"| test | {best['test_accuracy']:.4f} |" in card
    assert f"| validation | {best['best_val_accuracy']:.4f} |" in card
    assert f"softmax(logits / {description['temperature']:.4f})" in card
    val = description["calibration"]
    assert val["split"] == "val" and val["nll_after"] <= val["nll_before"]
    assert f"| validation | {val['nll_before']:.4f} | {val['nll_after']:.4f} |" in card
    assert f"{metrics['speed']['latency_ms']:.2f} ms per image at batch 1" in card
    for name, row in metrics["per_class"]["classes"].items():
        assert f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} |" in card
