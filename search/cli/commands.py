"""What each `ftsweep` command does: flags -> one call of the Python API -> output
and an exit code. The parser (parser.py) names these functions by name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from search.cli.parser import OVERRIDES, build_parser
from search.outputs.layout import LEADERBOARD_FILE, REPORT_FILE
from search.outputs.text import spreadsheet_safe
from trainables.errors import UserError

if TYPE_CHECKING:
    from search.sweep import SweepResult


def run(args: argparse.Namespace) -> int:
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
    return _ended(result, args)


def resume(args: argparse.Namespace) -> int:
    from search.sweep import resume_sweep

    result = resume_sweep(
        args.sweep,
        retry_errored=args.retry_errored,
        trust_results=args.trust_results,
        add=args.add,
        address=args.address,
        results=args.results,
        verbose=args.verbose,
        mlflow=args.mlflow,
    )
    return _ended(result, args)


def _ended(result: SweepResult, args: argparse.Namespace) -> int:
    """The sweep's last lines and exit code, then word of it (--notify, --on-end)."""
    code = _report(result)
    if args.notify or args.on_end:
        from search.outputs.notify import outcome, payload, send
        from search.space.loader import load_space

        space = load_space(result.sweep_dir / "space.yaml")
        ended = outcome(code, result.leaderboard)
        send(payload(result.sweep_dir, result.leaderboard, space, result.best_dir, ended),
             args.notify, args.on_end)  # fmt: skip
    return code


def _ensemble_line(sweep_dir: Path) -> None:
    """The finalists' ensemble beside the best alone, on the test split (ensemble.json)."""
    from search.model.ensemble import read_ensemble

    found = read_ensemble(sweep_dir)
    if found is None:
        return
    print(
        f"ensemble of the {len(found['members'])} finalists: test accuracy "
        f"{found['test']['accuracy']:.4f} (the best alone: "
        f"{found['single_best']['test']['accuracy']:.4f}); export it with\n  {found['export']}"
    )


def _report(result: SweepResult) -> int:
    """Prints the top of the leaderboard and where the best model is."""
    from search.outputs.leaderboard import render

    metric = f"best_{result.metric}"
    board = result.leaderboard
    print(f"\nleaderboard ({result.sweep_dir / 'leaderboard.csv'}), top 5:")
    columns = ["rank", "trial_id", "status", "backbone", metric, "best_epoch", "epochs"]
    print(render(board[[c for c in [*columns, "train_seconds"] if c in board]].head(5), "table"))
    if result.best_dir is not None:
        best = board.iloc[0]
        print(f"\nbest: trial {best['trial_id']}, {metric} {best[metric]:.4f}")
        print(f"model exported to {result.best_dir} (its model card: README.md)")
        print(
            f"load it with: from search import load_model; model = load_model('{result.best_dir}')"
        )
        _ensemble_line(result.sweep_dir)
    report = result.sweep_dir / REPORT_FILE
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
    if "feasible" in board and len(board) and not board["feasible"].any():
        reasons = board["infeasible"].dropna()
        print(
            f"\nno trial is within search.constraints ({len(board)} trials; the first: "
            f"{reasons.iloc[0] if len(reasons) else 'unknown'}); nothing was exported. Loosen "
            "the limit or give the space backbones that can meet it (ftsweep validate warns "
            "when none can)",
            file=sys.stderr,
        )
        return 1
    return 0


def status(args: argparse.Namespace) -> int:
    from search.outputs.status import describe_status, watch

    if args.watch is None:
        print("\n".join(describe_status(_sweep(args.sweep))))
        return 0
    if args.watch <= 0:
        raise UserError(f"--watch takes a number of seconds above 0, not {args.watch:g}")
    watch(args.sweep, interval=args.watch, resolve=_sweep)
    return 0


def validate(args: argparse.Namespace) -> int:
    from search.engine.cluster import cluster_nodes
    from search.preflight.validate import describe
    from search.space.loader import load_space

    space = load_space(args.space)
    nodes = cluster_nodes(args.address)
    print("\n".join(describe(space, timing=not args.no_timing, nodes=nodes)))
    print(f"{args.space}: OK")
    return 0


def init(args: argparse.Namespace) -> int:
    from search.preflight.init import write_starter

    data = Path(args.data)
    stem = data.resolve().stem if data.is_file() else data.resolve().name
    out = Path(args.out or f"spaces/{stem or 'sweep'}.yaml")
    write_starter(data, out, args.name)
    print(f"wrote {out}; check it with: ftsweep validate {out}")
    return 0


def weights_fetch(args: argparse.Namespace) -> int:
    from search.preflight.weights import fetch
    from search.space.loader import load_space

    space = load_space(args.space)
    fetched = fetch(space.params)
    for item, how in fetched:
        print(f"{how:10s} {item.describe()}: {item.file}")
    if not fetched:
        print(f"{args.space}: no torchvision weights to fetch (weights: none or local files)")
    return 0


def leaderboard(args: argparse.Namespace) -> int:
    from search.outputs.leaderboard import build_leaderboard, open_sweep, render, select

    sweep_dir = _sweep(args.sweep)
    space = open_sweep(sweep_dir)
    finished = (sweep_dir / LEADERBOARD_FILE).is_file()
    frame = build_leaderboard(sweep_dir, finished=finished)
    statuses = [s.strip() for s in args.status.split(",") if s.strip()] if args.status else None
    frame = select(frame, space, statuses=statuses, pareto=args.pareto, sort=args.sort)
    print(render(frame.head(args.top) if args.top else frame, args.format))
    return 0


def export(args: argparse.Namespace) -> int:
    ensemble = args.ensemble
    if ensemble is not None and args.trial:
        raise UserError("give --trial or --ensemble, not both")
    if args.format == "onnx":
        from search.model.onnx_export import export_onnx

        out = Path(args.out)
        difference = export_onnx(_sweep(args.sweep), out, args.trial, ensemble=ensemble)
        print(f"exported to {out}/model.onnx (onnxruntime against PyTorch: {difference:.1e})")
    elif ensemble is not None:
        from search.model.ensemble import export_ensemble

        out = export_ensemble(_sweep(args.sweep), Path(args.out), ensemble)
        print(f"exported the ensemble of the top {ensemble} trials to {out}")
    else:
        from search.model.export import export_trial

        out = export_trial(_sweep(args.sweep), Path(args.out), args.trial)
        print(f"exported to {out}")
    print(f"load it with: from search import load_model; model = load_model('{out}')")
    print(f"its model card: {out}/README.md")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from search.model.evaluate import describe_evaluation, evaluate_model

    result = evaluate_model(
        args.model,
        args.data,
        split=args.split,
        out_dir=args.out,
        batch_size=args.batch_size,
        device=args.device,
        tta=args.tta,
    )
    print("\n".join(describe_evaluation(result)))
    return 0


def predict(args: argparse.Namespace) -> int:
    from search.model.evaluate import collect_images, predict_files
    from search.model.figures import default_device
    from search.model.loading import load_model

    if args.top_k < 1:
        raise UserError(f"--top-k takes 1 or more, not {args.top_k}")
    model = load_model(args.model, args.device or default_device())
    files = collect_images(args.images)
    frame = predict_files(model, files, top_k=args.top_k, batch_size=args.batch_size, tta=args.tta)
    if args.out:
        spreadsheet_safe(frame).to_csv(args.out, index=False)
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


def tensorboard(args: argparse.Namespace) -> int:
    from search.engine.tracking import tensorboard_lines

    print("\n".join(tensorboard_lines(_sweep(args.sweep), args.sweep)))
    return 0


def plot(args: argparse.Namespace) -> int:
    from search.engine.importance import parameter_importance
    from search.outputs.drawing import redraw

    for path in redraw(_sweep(args.sweep), parameter_importance):
        print(path)
    return 0


def completion(args: argparse.Namespace) -> int:
    from search.cli.completion import script

    print(script(build_parser(), args.shell), end="")
    return 0


def _sweep(location: str) -> Path:
    """RESULTS/NAME; a sweep on object storage (s3://...) is copied to results/NAME first."""
    from search.outputs.storage import local_sweep

    return local_sweep(location, Path("results"))
