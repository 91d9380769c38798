"""Does a warm start reach the first night's best sooner? (search.warm_start, on the quickstart)

Night 1: the quickstart (spaces/quickstart.yaml, seed 0). Night 2, twice with
the same seed (1) and the same space (the quickstart without its start_from
point, so that neither run is handed a good configuration): once cold, once
warm-started from night 1. For each, the number of trials (in the order they
started) until one reaches night 1's best validation accuracy; "not reached"
when none of the trials does.

    python -m benchmarks.warm_start [--trials 10] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from search.cli import main as ftsweep


def night(space: dict, name: str, work: Path, flags: list[str]) -> tuple[pd.DataFrame, float]:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**space, "name": name}))
    tic = time.perf_counter()
    assert ftsweep(["run", str(path), "--results", str(work / "results"), *flags]) == 0
    board = pd.read_csv(work / "results" / name / "leaderboard.csv")
    return board.sort_values("started_at").reset_index(drop=True), time.perf_counter() - tic


def trials_to_reach(board: pd.DataFrame, target: float) -> int | None:
    reached = board.index[board["best_val_accuracy"] >= target - 1e-9]
    return int(reached[0]) + 1 if len(reached) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    space = yaml.safe_load(Path("spaces/quickstart.yaml").read_text())
    space["search"] |= {"num_samples": args.trials}
    space["search"].pop("time_budget", None)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        first, first_s = night(space, "night1", work, [])
        target = float(first["best_val_accuracy"].max())
        second = {**space, "search": {**space["search"], "seed": 1}}
        second["search"].pop("start_from", None)
        cold, cold_s = night(second, "cold", work, [])
        old = str(work / "results" / "night1")
        warm, warm_s = night(second, "warm", work, ["--warm-start", old])
    rows = {
        "target": target,
        "night1_trials_to_best": trials_to_reach(first, target),
        "cold": {"trials_to_target": trials_to_reach(cold, target),
                 "best": float(cold["best_val_accuracy"].max()), "seconds": round(cold_s, 1)},
        "warm": {"trials_to_target": trials_to_reach(warm, target),
                 "best": float(warm["best_val_accuracy"].max()), "seconds": round(warm_s, 1)},
        "trials_per_night": args.trials,
        "machine": platform.processor() or platform.machine(),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "warm-start-cpu.json").write_text(json.dumps(rows, indent=1))

    def shown(n: int | None) -> str:
        return str(n) if n is not None else f"not reached in {args.trials}"

    lines = [
        "# Warm start on the quickstart: trials to reach night 1's best validation accuracy",
        "",
        f"Night 1: spaces/quickstart.yaml, {args.trials} trials, seed 0, best val_accuracy "
        f"{target:.4f} (reached at trial {shown(rows['night1_trials_to_best'])}). Night 2: the "
        f"same space without start_from, seed 1, {args.trials} trials, cold and warm-started "
        "from night 1. CPU.",
        "",
        "| night 2 | trials to reach night 1's best | best val_accuracy | sweep s |",
        "| --- | --- | --- | --- |",
    ]
    for name in ("cold", "warm"):
        r = rows[name]
        lines.append(
            f"| {name} | {shown(r['trials_to_target'])} | {r['best']:.4f} | {r['seconds']} |"
        )
    (args.out / "warm-start-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
