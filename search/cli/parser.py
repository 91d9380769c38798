"""The `ftsweep` parser: one small function per command, flags only.

Each command's parser sets ``command`` to the name of its handler in
search/cli/commands.py; completion.py writes shell completion from it.
"""

from __future__ import annotations

import argparse
from typing import Any

from search.cli.completion import SHELLS

# flag -> the key of the space file it overrides
OVERRIDES = {
    "name": "name",
    "num_samples": "search.num_samples",
    "max_concurrent": "search.max_concurrent",
    "time_budget": "search.time_budget",
    "seed": "search.seed",
    "gpus_per_trial": "resources.gpus",
    "cpus_per_trial": "resources.cpus",
    "warm_start": "search.warm_start",
}

ADDRESS_HELP = (
    "an existing Ray cluster's head, HOST:6379 (default: RAY_ADDRESS, else start Ray locally)"
)

TTA_CHOICES = ("flip", "crops")  # search/model/tta.py's (not imported: no torch here)


def _output_flags(parser: argparse.ArgumentParser, *, resume: bool = False) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="Ray Tune's own progress tables and trial logs instead of ftsweep's compact view",
    )
    parser.add_argument(
        "--mlflow",
        metavar="URI",
        help="log every trial as an MLflow run: a folder (file store), http://HOST:5000 or "
        "databricks; needs pip install 'ftsweep[mlflow]'"
        + (" (default: the URI the sweep ran with)" if resume else ""),
    )
    parser.add_argument(
        "--notify",
        metavar="URL",
        help="when the sweep ends (or errors, or is interrupted) POST a JSON summary to URL "
        "(a Slack webhook, an ntfy topic, ...)",
    )
    parser.add_argument(
        "--on-end",
        metavar="CMD",
        help="when the sweep ends run CMD in a shell, with the summary in FTSWEEP_* "
        "environment variables",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftsweep", description="Find the best way to fine-tune an image classifier."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _run(commands)
    _resume(commands)
    _status(commands)
    _validate(commands)
    _init(commands)
    _weights(commands)
    _leaderboard(commands)
    _export(commands)
    _evaluate(commands)
    _predict(commands)
    _tensorboard(commands)
    _plot(commands)
    _completion(commands)
    return parser


def _run(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run a sweep",
        description="Run a sweep. Example: ftsweep run spaces/quickstart.yaml --num-samples 4",
    )
    run.add_argument("space", nargs="?", help="search-space YAML (default: spaces/quickstart.yaml)")
    run.add_argument("--results", default="results", help="folder of sweeps (default: results/)")
    run.add_argument("--address", help=ADDRESS_HELP)
    run.add_argument(
        "--storage",
        help="shared storage for a cluster: a folder every node mounts, or s3://, gs:// "
        "(Ray's experiment, checkpoints and the best model go to STORAGE/NAME)",
    )
    run.add_argument("--name", help="the sweep's folder name under --results")
    run.add_argument("--num-samples", type=int, help="number of trials")
    run.add_argument("--max-concurrent", type=int, help="trials running at once")
    run.add_argument("--time-budget", help="stop starting trials after this long, e.g. 8h")
    run.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (fractions pack trials)")
    run.add_argument("--cpus-per-trial", type=float, help="CPUs per trial")
    run.add_argument(
        "--warm-start",
        metavar="RESULTS/OLD",
        help="seed the study with an earlier sweep's trials that lie in this space "
        "(search.warm_start)",
    )
    run.add_argument("--seed", type=int, help="the sampler's seed")
    _output_flags(run)
    run.set_defaults(command="run")


def _resume(commands: Any) -> None:
    resume = commands.add_parser(
        "resume",
        help="continue an interrupted sweep",
        description="Continue an interrupted sweep. Example: ftsweep resume results/quickstart",
    )
    resume.add_argument("sweep", help="RESULTS/NAME, or STORAGE/NAME (a path or a URI)")
    resume.add_argument(
        "--retry-errored", action="store_true", help="run errored trials again from checkpoints"
    )
    resume.add_argument(
        "--trust-results",
        action="store_true",
        help="resume a sweep whose saved state ftsweep did not sign with this user's key "
        "(written before ftsweep signed it, or with another key); each pickle is scanned "
        "first and refused if it imports anything beyond what Ray, Optuna and ftsweep save",
    )
    resume.add_argument(
        "--add",
        type=int,
        default=0,
        metavar="N",
        help="run N more trials than planned (also on a finished sweep), sampled with all "
        "earlier results in Optuna's history",
    )
    resume.add_argument("--address", help=ADDRESS_HELP)
    resume.add_argument(
        "--results",
        default="results",
        help="where a sweep resumed from a URI keeps its files (default: results/)",
    )
    _output_flags(resume, resume=True)
    resume.set_defaults(command="resume")


def _status(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="trials done, running, stopped, errored; best so far; can it resume",
        description="Where a sweep stands. Examples: ftsweep status results/quickstart; "
        "from another terminal while it runs: ftsweep status results/quickstart --watch",
    )
    status.add_argument("sweep", help="RESULTS/NAME, or STORAGE/NAME (a path or a URI)")
    status.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=10.0,
        metavar="SECONDS",
        help="show the status again every SECONDS (default 10) until the sweep finishes",
    )
    status.set_defaults(command="status")


def _validate(commands: Any) -> None:
    validate = commands.add_parser(
        "validate",
        help="check a space file and say what a run would do, without running it",
        description="Check a space file and explain the run: its parameters, the data, trials "
        "at once, seconds per trial from a timed step, and warnings. "
        "Example: ftsweep validate spaces/quickstart.yaml",
    )
    validate.add_argument("space")
    validate.add_argument(
        "--no-timing",
        action="store_true",
        help="skip the timed training step (no cost per trial, no time-budget warning)",
    )
    validate.add_argument(
        "--address", help="count trials at once on this Ray cluster (default: RAY_ADDRESS)"
    )
    validate.set_defaults(command="validate")


def _init(commands: Any) -> None:
    init = commands.add_parser(
        "init",
        help="write a commented starter space file for an ImageFolder",
        description="Write a starter space sized to your data. "
        "Example: ftsweep init /data/flowers --out spaces/flowers.yaml",
    )
    init.add_argument(
        "data",
        help="an ImageFolder (class folders, or train/ val/ [test/]), or a manifest: a CSV or "
        "Parquet file with columns path, label [, split, group]",
    )
    init.add_argument(
        "--out", help="the space file to write (default: spaces/<folder or file name>.yaml)"
    )
    init.add_argument("--name", help="the sweep's name (default: the folder's)")
    init.set_defaults(command="init")


def _weights(commands: Any) -> None:
    weights = commands.add_parser(
        "weights",
        help="pretrained weights: fetch every file a space can need into torch's cache",
        description="Example: ftsweep weights fetch spaces/imagefolder-gpu.yaml",
    )
    weight_commands = weights.add_subparsers(dest="weights_command", required=True)
    fetch = weight_commands.add_parser(
        "fetch",
        help="download every torchvision weights file the space can load (TORCH_HOME)",
        description="Download ahead of an overnight run on workers without internet. "
        "Example: TORCH_HOME=/shared/torch ftsweep weights fetch spaces/imagefolder-gpu.yaml",
    )
    fetch.add_argument("space")
    fetch.set_defaults(command="weights_fetch")


def _leaderboard(commands: Any) -> None:
    board = commands.add_parser(
        "leaderboard",
        help="ranked trials of a sweep (also while it runs)",
        description="Ranked trials. Example: ftsweep leaderboard results/quickstart --top 5",
    )
    board.add_argument("sweep", help="RESULTS/NAME")
    board.add_argument("--top", type=int, help="show the best K")
    board.add_argument("--format", choices=("table", "csv", "markdown", "json"), default="table")
    board.add_argument(
        "--sort", help="a column to sort by instead of the sweep's metric (e.g. latency_ms)"
    )
    board.add_argument(
        "--status",
        help="only trials with this status (completed, stopped_early, out_of_time, "
        "errored, running, pending; comma-separated for several)",
    )
    board.add_argument(
        "--pareto",
        action="store_true",
        help="only the trials on the metric/latency Pareto front (none faster and better)",
    )
    board.set_defaults(command="leaderboard")


def _export(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="write a model folder for a trial",
        description="Export a trial. Example: ftsweep export results/quickstart --out model/",
    )
    export.add_argument("sweep", help="RESULTS/NAME")
    export.add_argument("--trial", help="trial id (default: the best)")
    export.add_argument("--out", required=True, help="the model folder to write")
    export.add_argument(
        "--format",
        choices=("pytorch", "onnx"),
        default="pytorch",
        help="pytorch: model.safetensors (default); onnx: model.onnx, checked against PyTorch "
        "with onnxruntime (pip install 'ftsweep[onnx]')",
    )
    export.add_argument(
        "--ensemble",
        type=int,
        metavar="K",
        help="export the top K trials as one model that averages their logits, each after "
        "its own temperature (instead of --trial)",
    )
    export.set_defaults(command="export")


def _evaluate(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="accuracy, per-class precision/recall/F1, confusion matrix of a model",
        description="Evaluate an exported model on labelled images. Example: "
        "ftsweep evaluate results/quickstart/best results/quickstart",
    )
    evaluate.add_argument("model", help="an exported model folder")
    evaluate.add_argument(
        "data",
        help="an ImageFolder (class folders, or train/ val/ test/) or a sweep's RESULTS/NAME",
    )
    evaluate.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="which split of a sweep or of a train/val/test folder (default: test)",
    )
    evaluate.add_argument("--out", help="where to save the figures (default: MODEL/evaluation)")
    _inference_flags(evaluate)
    evaluate.set_defaults(command="evaluate")


def _inference_flags(parser: argparse.ArgumentParser) -> None:
    """--batch-size, --device and --tta, as evaluate and predict take them."""
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: a GPU when present)")
    parser.add_argument(
        "--tta",
        nargs="?",
        const="flip",
        choices=TTA_CHOICES,
        help="test-time augmentation: flip (the image and its mirror; the default of --tta) "
        "or crops (those and four corner crops)",
    )


def _predict(commands: Any) -> None:
    predict = commands.add_parser(
        "predict",
        help="top-k labels and probabilities for images",
        description="Predict images. Example: ftsweep predict results/quickstart/best photos/ "
        "--out preds.csv",
    )
    predict.add_argument("model", help="an exported model folder")
    predict.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    predict.add_argument("--top-k", type=int, default=3, help="labels per image (default: 3)")
    predict.add_argument("--out", help="write a CSV (one row per image) instead of printing")
    _inference_flags(predict)
    predict.set_defaults(command="predict")


def _tensorboard(commands: Any) -> None:
    tensorboard = commands.add_parser(
        "tensorboard",
        help="print the command that opens a sweep's trials in TensorBoard",
        description="Every trial logs its metrics per epoch and its hyperparameters (HParams) "
        "for TensorBoard. Example: ftsweep tensorboard results/quickstart",
    )
    tensorboard.add_argument("sweep", help="RESULTS/NAME, or STORAGE/NAME (a path or a URI)")
    tensorboard.set_defaults(command="tensorboard")


def _plot(commands: Any) -> None:
    plot = commands.add_parser(
        "plot",
        help="draw the sweep's plots and report.md again (also while it runs)",
        description="Redraw plots/ and report.md. Example: ftsweep plot results/quickstart",
    )
    plot.add_argument("sweep", help="RESULTS/NAME")
    plot.set_defaults(command="plot")


def _completion(commands: Any) -> None:
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Complete ftsweep's commands, flags and their values in the shell. "
        'Example, in ~/.bashrc: eval "$(ftsweep completion bash)"; '
        'in ~/.zshrc, after compinit: eval "$(ftsweep completion zsh)"',
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(command="completion")
