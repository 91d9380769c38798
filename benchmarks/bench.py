"""ftsweep's speed, each figure a ratio measured side by side in one run (`make bench`).

1. epoch: the trainable against a bare PyTorch loop on the same model, the
   same cached images and the same augmentation (images per second).
2. sweep: the whole `ftsweep run` against the hand-written Ray Tune sweep of
   benchmarks/baseline_tune.py (same images, trials, epochs, concurrency).
3. utilization: the share of slot-time spent training, in both sweeps.
4. packing (GPU only): four trials at 0.25 GPU against one at 1 GPU.
5. ASHA: time until a trial first reaches the target accuracy, with ASHA
   against the same sampler with no early stopping.

The data set is scikit-learn's digits written as JPEG files (--source-size
px, as photos are larger than the size a sweep trains at), split into
train/ val/ test/ folders both sweeps read. On a 2-core CPU the whole run
takes about 10 minutes; on a GPU machine the GPU figures are added.

    python -m benchmarks.bench [--image-size 32] [--trials 6] [--epochs 4]
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
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image
from torch import nn

from trainables.augment import build_augmentation
from trainables.batches import open_splits
from trainables.cache import plan_cache
from trainables.data import make_split, read_split, write_split
from trainables.finetune import TrialSetup, train
from trainables.hparams import HParams
from trainables.loop import autocast, to_device
from trainables.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {
    "epoch": "CPU: at most 1.05 of the bare loop's time; GPU: at least 0.9 of its images/s",
    "sweep": "at most 0.6 of the hand-written sweep's wall time",
    "utilization": "at least 0.9",
    "packing": "at least 2x (GPU only)",
    "asha": "at most a third of the time without early stopping",
}


def write_images(root: Path, source_size: int) -> Path:
    """digits as JPEG files in train/ val/ test/ folders of class folders."""
    from sklearn.datasets import load_digits

    pixels = np.round(load_digits().images * (255 / 16)).astype(np.uint8)
    frame = make_split(None, "digits", val_fraction=0.15, test_fraction=0.15, seed=0)
    for row in frame.itertuples():
        index = int(row.path.split(":")[1])
        folder = root / row.split / row.label
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels[index]).convert("RGB")
        image.resize((source_size, source_size), Image.BICUBIC).save(
            folder / f"{index}.jpg", quality=90
        )
    return root


def device_and_precision() -> tuple[torch.device, torch.dtype | None, str]:
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16, torch.cuda.get_device_name(0)
    return torch.device("cpu"), None, f"CPU ({platform.processor() or platform.machine()})"


# 1 ------------------------------------------------------------------ epoch


def bare_epochs(images, labels, val, args, device, amp) -> list[float]:
    """The loop a user writes by hand around the same cached images and augmentation."""
    torch.manual_seed(0)
    model = build_model(args.backbone, 10, image_size=args.image_size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-3, weight_decay=0.01, fused=device.type == "cuda" or None
    )
    augment = build_augmentation("light", args.image_size)
    rates = []
    for _ in range(args.epoch_runs):
        tic = time.perf_counter()
        model.train()
        order = torch.randperm(len(labels))
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            idx = order[start : start + args.batch_size]
            batch = to_device(images[idx], device, augment)
            with autocast(device, amp):
                loss = nn.functional.cross_entropy(model(batch), labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad(), autocast(device, amp):
            for start in range(0, len(val[1]), 2 * args.batch_size):
                model(to_device(val[0][start : start + 2 * args.batch_size], device)).argmax(1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(len(order) // args.batch_size * args.batch_size / (time.perf_counter() - tic))
    return rates[1:]


def trainable_epochs(setup: TrialSetup, args, train_count: int) -> list[float]:
    seconds: list[float] = []
    hparams = HParams(backbone=args.backbone, lr=1e-3, augmentation="light", lr_scheduler="none")
    train(hparams, setup, report=lambda metrics, _: seconds.append(metrics["epoch_seconds"]))
    trained = train_count // args.batch_size * args.batch_size
    return [trained / s for s in seconds[1:]]


def measure_epoch(data_root: Path, work: Path, args) -> dict[str, Any]:
    device, amp, _ = device_and_precision()
    split_csv = work / "epoch" / "split.csv"
    split_csv.parent.mkdir(parents=True)
    frame = make_split(str(data_root), None, val_fraction=0.15, test_fraction=0.15, seed=0)
    write_split(frame, split_csv)
    cache = plan_cache(split_csv, str(data_root), args.image_size, split_csv.parent, None)
    _, splits, _ = open_splits(read_split(split_csv), str(data_root), args.image_size, cache)
    train_split, val_split = splits["train"], splits["val"]
    images = train_split.images.index_select(0, train_split.rows)  # type: ignore[attr-defined]
    val = (val_split.images.index_select(0, val_split.rows), val_split.labels)  # type: ignore[attr-defined]
    setup = TrialSetup(
        str(split_csv),
        str(data_root),
        args.image_size,
        args.epoch_runs,
        args.batch_size,
        precision="bf16",
        cache=cache,
        cpus=1,
    )
    torch.set_num_threads(1)
    bare, ours = [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both
        bare += bare_epochs(images, train_split.labels, val, args, device, amp)
        ours += trainable_epochs(setup, args, len(train_split))
    ratio = statistics.median(ours) / statistics.median(bare)
    return {
        "bare_images_per_s": statistics.median(bare),
        "trainable_images_per_s": statistics.median(ours),
        "epochs_timed": len(bare),
        "ratio": ratio,  # trainable's images/s over the bare loop's
        "time_ratio": 1 / ratio,
        "met": (1 / ratio <= 1.05) if device.type == "cpu" else ratio >= 0.9,
    }


def measure_pipeline(data_root: Path, work: Path, args) -> dict[str, Any]:
    """Images/s of the input pipeline alone, on one CPU thread, light augmentation.

    ftsweep: batches gathered from the node's cache and augmented as a batch
    (on the CPU here; on the trial's GPU in a GPU sweep). The tutorial's:
    ImageFolder decoding each JPEG with PIL and transforming it image by image.
    """
    from torchvision import datasets, transforms

    from benchmarks.baseline_tune import MEAN, STD

    torch.set_num_threads(1)
    split_csv = work / "epoch" / "split.csv"
    cache = plan_cache(split_csv, str(data_root), args.image_size, split_csv.parent, None)
    _, splits, _ = open_splits(read_split(split_csv), str(data_root), args.image_size, cache)
    augment = build_augmentation("light", args.image_size)
    tutorial = datasets.ImageFolder(
        str(data_root / "train"),
        transforms.Compose(
            [
                transforms.RandomResizedCrop(args.image_size, scale=(0.6, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        ),
    )
    loader = torch.utils.data.DataLoader(tutorial, batch_size=args.batch_size, shuffle=True)
    ours, theirs = [], []
    for _ in range(args.repeats):
        tic = time.perf_counter()
        count = 0
        generator = torch.Generator().manual_seed(0)
        for images, labels in splits["train"].batches(args.batch_size, generator=generator):
            to_device(images, torch.device("cpu"), augment)
            count += len(labels)
        ours.append(count / (time.perf_counter() - tic))
        tic = time.perf_counter()
        count = 0
        for _, labels in loader:
            count += len(labels)
        theirs.append(count / (time.perf_counter() - tic))
    return {
        "ftsweep_images_per_s": statistics.median(ours),
        "tutorial_images_per_s": statistics.median(theirs),
        "ratio": statistics.median(ours) / statistics.median(theirs),
        "source_size": args.source_size,
    }


# 2, 3, 5 ------------------------------------------------------------- sweeps


def space_file(work: Path, name: str, data_root: Path, args, scheduler: str, gpus: float = 0.0):
    text = {
        "name": name,
        "data": {"path": str(data_root), "image_size": args.image_size},
        "trial": {"max_epochs": args.epochs, "batch_size": args.batch_size},
        "search": {
            "num_samples": args.trials,
            "max_concurrent": args.concurrency,
            "sampler": "tpe",
            "seed": 0,
            "finalists": 0,
            "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 3}
            if scheduler == "asha"
            else {"type": "none"},
        },
        "resources": {"cpus": 1, "gpus": gpus},
        "space": {
            "backbone": args.backbone,
            "weights": "none",
            "lr": {"loguniform": list(args.lr_range)},
            "weight_decay": 0.01,
            "lr_scheduler": "none",
            "augmentation": "light",
        },
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(text))
    return path


def our_sweep(work: Path, name: str, data_root: Path, args, scheduler: str) -> dict[str, Any]:
    from search.sweep import run_sweep

    path = space_file(work, name, data_root, args, scheduler)
    tic = time.time()
    run_sweep(path, results=work / "results")
    wall = time.time() - tic
    results = _results(work / "results" / name / "tune")
    return {
        "wall_s": wall,
        **_summary(results, tic, args, train_seconds="train_seconds"),
    }


def baseline_sweep(work: Path, data_root: Path, args) -> dict[str, Any]:
    from benchmarks.baseline_tune import run_baseline

    tic = time.time()
    run_baseline(
        data_root,
        work / "baseline",
        backbone=args.backbone,
        lr_range=tuple(args.lr_range),
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        num_samples=args.trials,
        concurrency=args.concurrency,
    )
    wall = time.time() - tic
    results = _results(work / "baseline" / "baseline")
    return {"wall_s": wall, **_summary(results, tic, args, train_seconds="time_total_s")}


def _results(experiment: Path) -> pd.DataFrame:
    rows = []
    for result_file in experiment.glob("*/result.json"):
        for line in result_file.read_text().splitlines():
            if line.strip():
                rows.append({**json.loads(line), "trial": result_file.parent.name})
    return pd.DataFrame(rows)


def _summary(results: pd.DataFrame, tic: float, args, train_seconds: str) -> dict[str, Any]:
    """Epochs trained, best accuracy, time to the target, slot utilization."""
    last = results.sort_values("epoch").groupby("trial").tail(1)
    if train_seconds == "time_total_s":  # Ray's: the time inside the trainable, per trial
        busy = float(last["time_total_s"].sum())
    else:
        busy = float(last["train_seconds"].sum())
    span = float(results["reported_at"].max()) - tic  # from the command's start
    return {
        "trials": int(results["trial"].nunique()),
        "epochs_trained": int(last["epoch"].sum()),
        "best_val_accuracy": float(results["val_accuracy"].max()),
        "utilization": busy / (args.concurrency * span) if span > 0 else None,
        # from the command's start until the first trial's trainable began (Ray's clock)
        "first_trial_start_s": float((results["timestamp"] - results["time_total_s"]).min() - tic),
        "_results": results,
        "_started": tic,
    }


def time_to(summary: dict[str, Any], target: float) -> float | None:
    """Seconds from the sweep's start until a trial first reported ``target`` or better."""
    results = summary["_results"]
    reached = results[results["val_accuracy"] >= target - 1e-9]
    return float(reached["reported_at"].min() - summary["_started"]) if len(reached) else None


# 4 ---------------------------------------------------------------- packing


def measure_packing(work: Path, data_root: Path, args) -> dict[str, Any]:
    """Images per second of one trial at 1 GPU, and of four at 0.25 GPU together."""
    from search.sweep import run_sweep

    figures = {}
    for gpus, trials in ((1.0, 1), (0.25, 4)):
        name = f"packing-{trials}"
        options = argparse.Namespace(**{**vars(args), "trials": trials, "concurrency": trials})
        options.image_size, options.backbone = 64, "resnet18"
        path = space_file(work, name, data_root, options, "none", gpus=gpus)
        run_sweep(path, results=work / "results")
        results = _results(work / "results" / name / "tune")
        train_count = (read_split(work / "results" / name / "split.csv")["split"] == "train").sum()
        timed = results[results["epoch"] > 1]  # the first epoch warms cuDNN up
        per_trial = timed.groupby("trial")["epoch_seconds"].median()
        figures[gpus] = float((train_count / per_trial).sum())
    return {
        "one_trial_images_per_s": figures[1.0],
        "four_packed_images_per_s": figures[0.25],
        "ratio": figures[0.25] / figures[1.0],
        "met": figures[0.25] / figures[1.0] >= 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--source-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--lr-range", type=float, nargs=2, default=(3e-4, 3e-3))
    parser.add_argument(
        "--target", type=float, help="val_accuracy for item 5 (default: the best both reach)"
    )
    parser.add_argument("--epoch-runs", type=int, default=3, help="epochs per run in item 1")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=["epoch", "sweep", "packing", "asha"])
    args = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="ftsweep-bench-"))
    _, _, machine = device_and_precision()
    record: dict[str, Any] = {
        "benchmark": "bench",
        "machine": f"{machine}; {torch.get_num_threads()} CPU threads available",
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k != "only"},
        "targets": TARGETS,
    }
    started = time.time()
    data_root = write_images(work / "data", args.source_size)
    if "epoch" in args.only:
        record["epoch"] = measure_epoch(data_root, work, args)
        print("epoch:", record["epoch"], flush=True)
        record["pipeline"] = measure_pipeline(data_root, work, args)
        print("pipeline:", record["pipeline"], flush=True)
    ray.init(num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False)
    try:
        if "sweep" in args.only or "asha" in args.only:
            ours = our_sweep(work, "ours-asha", data_root, args, "asha")
            print("ftsweep:", public(ours), flush=True)
            record["sweep"] = {"ftsweep": ours}
        if "sweep" in args.only:
            baseline = baseline_sweep(work, data_root, args)
            print("baseline:", public(baseline), flush=True)
            record["sweep"]["hand_written"] = baseline
            record["sweep"]["ratio"] = ours["wall_s"] / baseline["wall_s"]
            record["sweep"]["met"] = record["sweep"]["ratio"] <= 0.6
        if "asha" in args.only:
            fifo = our_sweep(work, "ours-none", data_root, args, "none")
            print("no early stopping:", public(fifo), flush=True)
            # the best accuracy both sweeps reach (the first good trial says little)
            target = args.target or min(ours["best_val_accuracy"], fifo["best_val_accuracy"])
            reached = time_to(ours, target), time_to(fifo, target)
            record["asha"] = {
                "target": target,
                "asha_time_to_target_s": reached[0],
                "none_time_to_target_s": reached[1],
                "asha": ours,
                "no_early_stopping": fifo,
                "ratio": reached[0] / reached[1] if None not in reached else None,
                "wall_ratio": ours["wall_s"] / fifo["wall_s"],
            }
            record["asha"]["met"] = (record["asha"]["ratio"] or 99) <= 1 / 3
        if "packing" in args.only and torch.cuda.is_available():
            record["packing"] = measure_packing(work, data_root, args)
    finally:
        ray.shutdown()
    record["bench_seconds"] = time.time() - started
    table = markdown(record)
    suffix = "gpu" if torch.cuda.is_available() else "cpu"
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{suffix}.json"
    out.write_text(json.dumps(public(record), indent=2) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"written: {out} and {out.with_suffix('.md')}")
    shutil.rmtree(work, ignore_errors=True)


def public(value: Any) -> Any:
    """The record without its working data (keys starting with _)."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items() if not str(k).startswith("_")}
    return value


def markdown(record: dict[str, Any]) -> str:
    def fmt(value: Any, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [
        f"Machine: {record['machine']}; torch {record['torch']}; "
        f"whole run {record['bench_seconds'] / 60:.1f} min.",
        "",
        "| # | measurement | ftsweep | reference | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    if "epoch" in record:
        e = record["epoch"]
        rows.append(
            f"| 1 | training images/s per epoch (trainable vs. bare loop, same cached images "
            f"and augmentation) | {e['trainable_images_per_s']:.0f} | "
            f"{e['bare_images_per_s']:.0f} | time {e['time_ratio']:.3f} | "
            f"{TARGETS['epoch']} | {'yes' if e['met'] else 'no'} |"
        )
    if "pipeline" in record:
        p = record["pipeline"]
        rows.append(
            f"| 1b | input pipeline alone, images/s on one CPU thread (cache + batched "
            f"augmentation vs. PIL ImageFolder from {p['source_size']} px JPEGs) | "
            f"{p['ftsweep_images_per_s']:.0f} | {p['tutorial_images_per_s']:.0f} | "
            f"{p['ratio']:.1f}x | - | - |"
        )
    if "sweep" in record and "ratio" in record["sweep"]:
        s = record["sweep"]
        ours, base = s["ftsweep"], s["hand_written"]
        rows.append(
            f"| 2 | sweep wall time, s ({ours['trials']} trials, epochs trained "
            f"{ours['epochs_trained']} vs. {base['epochs_trained']}) | {ours['wall_s']:.1f} | "
            f"{base['wall_s']:.1f} | {s['ratio']:.2f} | {TARGETS['sweep']} | "
            f"{'yes' if s['met'] else 'no'} |"
        )
        rows.append(
            "| 3 | slot utilization (time in trials' epochs / slots x sweep time) | "
            f"{fmt(ours['utilization'])} | {fmt(base['utilization'])} | - | "
            f"{TARGETS['utilization']} | "
            f"{'yes' if (ours['utilization'] or 0) >= 0.9 else 'no'} |"
        )
    if "packing" in record:
        p = record["packing"]
        rows.append(
            f"| 4 | images/s, 4 trials at 0.25 GPU vs. 1 at 1 GPU | "
            f"{p['four_packed_images_per_s']:.0f} | {p['one_trial_images_per_s']:.0f} | "
            f"{p['ratio']:.2f}x | {TARGETS['packing']} | {'yes' if p['met'] else 'no'} |"
        )
    else:
        rows.append(f"| 4 | packing | - | - | - | {TARGETS['packing']} | needs a GPU |")
    if "asha" in record:
        a = record["asha"]
        rows.append(
            f"| 5 | seconds to val_accuracy >= {a['target']:.4f} (ASHA vs. none; "
            f"whole sweeps {a['asha']['wall_s']:.0f} vs. {a['no_early_stopping']['wall_s']:.0f} s)"
            f" | {fmt(a['asha_time_to_target_s'], 1)} | "
            f"{fmt(a['none_time_to_target_s'], 1)} | {fmt(a['ratio'])} | "
            f"{TARGETS['asha']} | {'yes' if a['met'] else 'no'} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
