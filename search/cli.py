"""The `ftsweep` command line: flags -> one API call -> exit code."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from search.completion import SHELLS
from trainables.errors import UserError

if TYPE_CHECKING:
    from search.sweep import SweepResult

# flag -> the key of the space file it overrides
OVERRIDES = {
    "name": "name",
    "num_samples": "search.num_samples",
    "max_concurrent": "search.max_concurrent",
    "time_budget": "search.time_budget",
    "seed": "search.seed",
    "gpus_per_trial": "resources.gpus",
    "cpus_per_trial": "resources.cpus",
}

ADDRESS_HELP = (
    "an existing Ray cluster's head, HOST:6379 (default: RAY_ADDRESS, else start Ray locally)"
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.command(args) or 0)
    except UserError as exc:
        print(f"ftsweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ftsweep: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from search.sweep import run_sweep

    overrides = {
        key: getattr(args, flag)
        for flag, key in OVERRIDES.items()
        if getattr(args, flag) is not None
    }
    result = run_sweep(
        args.space,
        results=args.results,
        overrides=overrides,
        address=args.address,
        storage=args.storage,
        verbose=args.verbose,
        mlflow=args.mlflow,
    )
    return _report(result)


def _resume(args: argparse.Namespace) -> int:
    from search.sweep import resume_sweep

    result = resume_sweep(
        args.sweep,
        retry_errored=args.retry_errored,
        add=args.add,
        address=args.address,
        results=args.results,
        verbose=args.verbose,
        mlflow=args.mlflow,
    )
    return _report(result)


def _report(result: SweepResult) -> int:
    """Prints the top of the leaderboard and where the best model is."""
    from search.leaderboard import render

    metric = f"best_{result.metric}"
    board = result.leaderboard
    print(f"\nleaderboard ({result.sweep_dir / 'leaderboard.csv'}), top 5:")
    columns = ["rank", "trial_id", "status", "backbone", metric, "best_epoch", "epochs"]
    print(render(board[[c for c in [*columns, "train_seconds"] if c in board]].head(5), "table"))
    if result.best_dir is not None:
        best = board.iloc[0]
        print(f"\nbest: trial {best['trial_id']}, {metric} {best[metric]:.4f}")
        print(f"model exported to {result.best_dir}")
        print(
            f"load it with: from search import load_model; model = load_model('{result.best_dir}')"
        )
    report = result.sweep_dir / "report.md"
    if report.is_file():
        print(f"report: {report} (plots in {result.sweep_dir / 'plots'})")
    if result.interrupted:
        print(
            "\nsweep interrupted: trials marked 'running' did not finish; continue with\n"
            f"  ftsweep resume {result.sweep_dir}",
            file=sys.stderr,
        )
        return 130
    statuses = board["status"] if len(board) else None
    if statuses is not None and (statuses == "errored").all():
        first = board["error"].dropna().iloc[0] if board["error"].notna().any() else "unknown"
        print(
            f"\nevery trial errored ({len(board)}); the first error: {first}\n"
            "fix its cause (the trials' error.txt in tune/ has the tracebacks), then re-run "
            f"them from their checkpoints with\n  ftsweep resume {result.sweep_dir} "
            "--retry-errored",
            file=sys.stderr,
        )
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    from search.status import describe_status, watch

    if args.watch is None:
        print("\n".join(describe_status(_sweep(args.sweep))))
        return 0
    if args.watch <= 0:
        raise UserError(f"--watch takes a number of seconds above 0, not {args.watch:g}")
    watch(args.sweep, interval=args.watch, resolve=_sweep)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from search.space import load_space
    from search.validate import cluster_nodes, describe

    space = load_space(args.space)
    nodes = cluster_nodes(args.address)
    print("\n".join(describe(space, timing=not args.no_timing, nodes=nodes)))
    print(f"{args.space}: OK")
    return 0


def _init(args: argparse.Namespace) -> int:
    from search.init import write_starter

    data = Path(args.data)
    out = Path(args.out or f"spaces/{data.resolve().name or 'sweep'}.yaml")
    write_starter(data, out, args.name)
    print(f"wrote {out}; check it with: ftsweep validate {out}")
    return 0


def _weights_fetch(args: argparse.Namespace) -> int:
    from search.space import load_space
    from search.weights import fetch

    space = load_space(args.space)
    fetched = fetch(space.params)
    for item, how in fetched:
        print(f"{how:10s} {item.describe()}: {item.file}")
    if not fetched:
        print(f"{args.space}: no torchvision weights to fetch (weights: none or local files)")
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from search.leaderboard import (
        LOWER_IS_BETTER,
        STATUSES,
        build_leaderboard,
        open_sweep,
        pareto_mask,
        render,
    )

    sweep_dir = _sweep(args.sweep)
    space = open_sweep(sweep_dir)
    finished = (sweep_dir / "leaderboard.csv").is_file()
    frame = build_leaderboard(sweep_dir, finished=finished)
    if args.status:
        wanted = [s.strip() for s in args.status.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in STATUSES]
        if unknown:
            raise UserError(
                f"--status {','.join(unknown)}: not a trial status; use one or more of "
                f"{', '.join(STATUSES)}, comma-separated"
            )
        frame = frame[frame["status"].isin(wanted)]
    if args.pareto:
        if "latency_ms" not in frame:
            raise UserError(
                "--pareto needs the latency_ms column, which trials report from their first "
                "epoch on; none has yet",
                str(sweep_dir),
            )
        frame = frame[pareto_mask(frame, space.trial.metric, space.trial.mode)]
    if args.sort:
        if args.sort not in frame:
            raise UserError(
                f"--sort {args.sort}: no such column; columns: {', '.join(frame.columns)}"
            )
        ascending = args.sort.endswith("_loss") or args.sort in LOWER_IS_BETTER
        frame = frame.sort_values(args.sort, ascending=ascending, na_position="last")
    if args.top:
        frame = frame.head(args.top)
    print(render(frame, args.format))
    return 0


def _export(args: argparse.Namespace) -> int:
    from search.export import export_trial

    out = export_trial(_sweep(args.sweep), Path(args.out), args.trial)
    print(f"exported to {out}")
    print(f"load it with: from search import load_model; model = load_model('{out}')")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from search.evaluate import describe_evaluation, evaluate_model

    result = evaluate_model(
        args.model,
        args.data,
        split=args.split,
        out_dir=args.out,
        batch_size=args.batch_size,
        device=args.device,
    )
    print("\n".join(describe_evaluation(result)))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from search.evaluate import collect_images, predict_files
    from search.export import default_device, load_model

    if args.top_k < 1:
        raise UserError(f"--top-k takes 1 or more, not {args.top_k}")
    model = load_model(args.model, args.device or default_device())
    files = collect_images(args.images)
    frame = predict_files(model, files, top_k=args.top_k, batch_size=args.batch_size)
    if args.out:
        frame.to_csv(args.out, index=False)
        print(f"{len(frame)} predictions written to {args.out}")
    else:
        print(frame.drop(columns="error").to_string(index=False))
    failed = frame[frame["error"].notna()]
    if not failed.empty:
        raise UserError(
            f"{len(failed)} of {len(frame)} files could not be read as images and have no "
            f"prediction (their rows carry the error): {', '.join(failed['path'].head(5))}"
            + (" ..." if len(failed) > 5 else "")
            + "; the others were predicted"
        )
    return 0


def _tensorboard(args: argparse.Namespace) -> int:
    from search.tracking import tensorboard_lines

    print("\n".join(tensorboard_lines(_sweep(args.sweep), args.sweep)))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from search.sweep import redraw

    for path in redraw(_sweep(args.sweep)):
        print(path)
    return 0


def _completion(args: argparse.Namespace) -> int:
    from search.completion import script

    print(script(_parser(), args.shell), end="")
    return 0


def _sweep(location: str) -> Path:
    """RESULTS/NAME; a sweep on object storage (s3://...) is copied to results/NAME first."""
    from search.storage import local_sweep

    return local_sweep(location, Path("results"))


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftsweep", description="Find the best way to fine-tune an image classifier."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

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
    run.add_argument("--seed", type=int, help="the sampler's seed")
    _output_flags(run)
    run.set_defaults(command=_run)

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
    resume.set_defaults(command=_resume)

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
    status.set_defaults(command=_status)

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
    validate.set_defaults(command=_validate)

    init = commands.add_parser(
        "init",
        help="write a commented starter space file for an ImageFolder",
        description="Write a starter space sized to your data. "
        "Example: ftsweep init /data/flowers --out spaces/flowers.yaml",
    )
    init.add_argument("data", help="an ImageFolder: class folders, or train/ val/ [test/]")
    init.add_argument("--out", help="the space file to write (default: spaces/<folder>.yaml)")
    init.add_argument("--name", help="the sweep's name (default: the folder's)")
    init.set_defaults(command=_init)

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
    fetch.set_defaults(command=_weights_fetch)

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
        help="only trials with this status (completed, stopped_early, errored, running, "
        "pending; comma-separated for several)",
    )
    board.add_argument(
        "--pareto",
        action="store_true",
        help="only the trials on the metric/latency Pareto front (none faster and better)",
    )
    board.set_defaults(command=_leaderboard)

    export = commands.add_parser(
        "export",
        help="write a model folder for a trial",
        description="Export a trial. Example: ftsweep export results/quickstart --out model/",
    )
    export.add_argument("sweep", help="RESULTS/NAME")
    export.add_argument("--trial", help="trial id (default: the best)")
    export.add_argument("--out", required=True, help="the model folder to write")
    export.set_defaults(command=_export)

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
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--device", help="cpu, cuda, cuda:1 (default: a GPU when present)")
    evaluate.set_defaults(command=_evaluate)

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
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--device", help="cpu, cuda, cuda:1 (default: a GPU when present)")
    predict.set_defaults(command=_predict)

    tensorboard = commands.add_parser(
        "tensorboard",
        help="print the command that opens a sweep's trials in TensorBoard",
        description="Every trial logs its metrics per epoch and its hyperparameters (HParams) "
        "for TensorBoard. Example: ftsweep tensorboard results/quickstart",
    )
    tensorboard.add_argument("sweep", help="RESULTS/NAME, or STORAGE/NAME (a path or a URI)")
    tensorboard.set_defaults(command=_tensorboard)

    plot = commands.add_parser(
        "plot",
        help="draw the sweep's plots and report.md again (also while it runs)",
        description="Redraw plots/ and report.md. Example: ftsweep plot results/quickstart",
    )
    plot.add_argument("sweep", help="RESULTS/NAME")
    plot.set_defaults(command=_plot)

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Complete ftsweep's commands, flags and their values in the shell. "
        'Example, in ~/.bashrc: eval "$(ftsweep completion bash)"; '
        'in ~/.zshrc, after compinit: eval "$(ftsweep completion zsh)"',
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(command=_completion)
    return parser
