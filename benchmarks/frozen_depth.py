"""Time per training epoch against frozen_depth: the backward compute a frozen prefix saves.

For each backbone, every frozen_depth from 0 (train all) to ``all`` (a
linear probe) trains one epoch of the same data (digits drawn at
--image-size, random weights: the timing does not depend on them). Runs are
interleaved, one round over every depth at a time, so machine noise hits all
depths alike; the figures are medians over the rounds and ratios to depth 0
of the same backbone. The forward pass alone (eval, no_grad) is the floor a
fully frozen backbone still pays.

    python benchmarks/frozen_depth.py [--backbones resnet18 efficientnet_b0]
        [--image-size 64] [--images 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from trainables.backbones import stage_count
from trainables.data import decode_split, make_split
from trainables.loop import to_device, train_epoch
from trainables.models import build_model
from trainables.optim import build_optimizer, build_scheduler

RESULTS = Path(__file__).resolve().parent / "results"


def epoch_seconds(
    backbone: str, depth: int | str, images: torch.Tensor, labels: torch.Tensor, batch: int
) -> float:
    torch.manual_seed(0)
    model = build_model(backbone, 10, frozen_depth=depth, image_size=images.shape[-1])
    optimizer = build_optimizer(model, "adamw", lr=1e-3)
    steps = len(labels) // batch
    scheduler = build_scheduler(optimizer, "cosine", epochs=1, steps_per_epoch=steps)
    batches = [
        (images[i : i + batch], labels[i : i + batch]) for i in range(0, steps * batch, batch)
    ]
    loss_fn = nn.CrossEntropyLoss()
    device = torch.device("cpu")
    train_epoch(model, batches[:1], optimizer, scheduler, loss_fn, device)  # warm-up step
    tic = time.perf_counter()
    train_epoch(model, batches, optimizer, scheduler, loss_fn, device)
    return time.perf_counter() - tic


def forward_seconds(backbone: str, images: torch.Tensor, batch: int) -> float:
    model = build_model(backbone, 10, image_size=images.shape[-1]).eval()
    with torch.no_grad():
        model(to_device(images[:batch], torch.device("cpu")))
        tic = time.perf_counter()
        for start in range(0, len(images) - batch + 1, batch):
            model(to_device(images[start : start + batch], torch.device("cpu")))
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "efficientnet_b0"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    frame = make_split(None, "digits", val_fraction=0.1, test_fraction=0.1, seed=0)
    _, sets = decode_split(frame[frame["split"] == "train"], None, args.image_size)
    images, labels = sets["train"].images[: args.images], sets["train"].labels[: args.images]
    depths = {b: [*range(stage_count(b) + 1), "all"] for b in args.backbones}
    times: dict[str, dict[str, list[float]]] = {
        b: {str(d): [] for d in ds} | {"forward only": []} for b, ds in depths.items()
    }
    for round_ in range(args.rounds):
        for backbone, values in depths.items():
            for depth in values:
                seconds = epoch_seconds(backbone, depth, images, labels, args.batch_size)
                times[backbone][str(depth)].append(seconds)
                print(f"round {round_ + 1} {backbone} frozen_depth {depth}: {seconds:.2f} s")
            times[backbone]["forward only"].append(
                forward_seconds(backbone, images, args.batch_size)
            )

    rows = []
    for backbone, by_depth in times.items():
        base = statistics.median(by_depth["0"])
        for depth, values in by_depth.items():
            median = statistics.median(values)
            rows.append(
                {
                    "backbone": backbone,
                    "frozen_depth": depth,
                    "epoch_seconds": round(median, 3),
                    "vs_depth_0": round(median / base, 3),
                    "runs": [round(v, 3) for v in values],
                }
            )
    meta = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "image_size": args.image_size,
        "images": len(labels),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "device": "cpu",
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"frozen_depth-cpu-{args.image_size}px"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"# Epoch time against frozen_depth (CPU, {meta['threads']} threads, "
        f"{args.image_size} px, {len(labels)} images, batch {args.batch_size}, "
        f"median of {args.rounds} interleaved rounds)",
        "",
        "| backbone | frozen_depth | s/epoch | vs depth 0 |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r['backbone']} | {r['frozen_depth']} | {r['epoch_seconds']:.2f} | "
            f"{r['vs_depth_0']:.2f} |"
            for r in rows
        ),
        "",
        "`forward only`: the same images through the model in eval mode without gradients, "
        "the floor that a fully frozen backbone still pays.",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
