"""Per-epoch time of the ftsweep trainable against a bare PyTorch loop.

Same model (resnet18, new linear head), same data (digits drawn at
--image-size), same batch size, optimizer and evaluation pass. Runs are
interleaved (bare, trainable, bare, trainable, ...) so machine noise hits
both; the figure to quote is the ratio of medians. The trainable is also run
once as a one-trial Ray Tune sweep, where each epoch adds tune.report and a
checkpoint persisted to storage.

    python benchmarks/epoch_overhead.py [--epochs 3] [--repeats 2] [--image-size 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from trainables.augment import normalize
from trainables.data import decode_split, make_split, write_split
from trainables.finetune import TrialSetup, train
from trainables.hparams import HParams
from trainables.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"


def bare_epochs(split_csv: Path, setup: TrialSetup, epochs: int) -> list[float]:
    """The loop a user writes by hand: preloaded tensors, no checkpoints."""
    import pandas as pd

    _, sets = decode_split(pd.read_csv(split_csv, dtype=str), None, setup.image_size)
    train_x, train_y = normalize(sets["train"].images), sets["train"].labels
    val_x, val_y = normalize(sets["val"].images), sets["val"].labels
    torch.manual_seed(0)
    model = build_model("resnet18", 10, image_size=setup.image_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    times = []
    for _ in range(epochs):
        tic = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_y))
        for start in range(0, len(order) - setup.batch_size + 1, setup.batch_size):
            idx = order[start : start + setup.batch_size]
            loss = nn.functional.cross_entropy(model(train_x[idx]), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            model(val_x).argmax(1).eq(val_y).float().mean()
        times.append(time.perf_counter() - tic)
    return times


def trainable_epochs(setup: TrialSetup, hparams: HParams) -> list[float]:
    """ftsweep's trainable in process; each epoch also writes its checkpoint."""
    times, last = [], [time.perf_counter()]
    keep = Path(tempfile.mkdtemp())

    def report(metrics, directory):
        shutil.copytree(directory, keep / str(metrics["epoch"]))  # what Ray's storage does
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    train(hparams, setup, report=report)
    shutil.rmtree(keep)
    return times[1:] if len(times) > 1 else times  # the first epoch also decodes the data


def ray_epochs(setup: TrialSetup, hparams: HParams, workdir: Path) -> list[float]:
    """The trainable as one Ray Tune trial: time between consecutive reports."""
    import ray
    from ray import tune

    from trainables.finetune import tune_trainable

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        trainable = tune.with_parameters(tune_trainable, setup=setup, resolve=lambda config: config)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": setup.cpus}),
            param_space={k: v for k, v in hparams.__dict__.items()},
            run_config=tune.RunConfig(name="bench", storage_path=str(workdir), verbose=0),
        )
        result = tuner.fit()[0]
        stamps = result.metrics_dataframe["time_this_iter_s"].tolist()
        return stamps[1:]
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    workdir = Path(tempfile.mkdtemp())
    split_csv = workdir / "split.csv"
    write_split(
        make_split(None, "digits", val_fraction=0.15, test_fraction=0.15, seed=0), split_csv
    )
    setup = TrialSetup(
        str(split_csv),
        None,
        args.image_size,
        args.epochs + 1,
        args.batch_size,
        precision="fp32",
        cpus=1,
    )
    hparams = HParams(
        backbone="resnet18", lr=1e-3, augmentation="none", lr_scheduler="none", weight_decay=0.01
    )
    bare, ours = [], []
    for _ in range(args.repeats):
        bare += bare_epochs(split_csv, setup, args.epochs)
        ours += trainable_epochs(setup, hparams)
    rows = {"bare PyTorch loop": bare, "ftsweep trainable": ours}
    if not args.no_ray:
        rows["ftsweep trainable under Ray Tune"] = ray_epochs(setup, hparams, workdir)
    base = statistics.median(bare)
    table = [
        "| loop | epochs timed | median s/epoch | ratio to bare |",
        "|---|---|---|---|",
        *(
            f"| {name} | {len(t)} | {med:.2f} | {med / base:.3f} |"
            for name, t in rows.items()
            for med in [statistics.median(t)]
        ),
    ]
    record = {
        "benchmark": "epoch_overhead",
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch thread, CPU",
        "torch": torch.__version__,
        "model": "resnet18",
        "data": "digits",
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "seconds_per_epoch": rows,
        "ratios": {name: statistics.median(t) / base for name, t in rows.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"epoch_overhead-cpu-{args.image_size}px.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    (out.with_suffix(".md")).write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"written: {out}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
