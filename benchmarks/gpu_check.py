"""The GPU path of ftsweep, proven in one run (`make gpu-check`, under 8 minutes on one GPU).

Each item runs on the GPU with the torch installed (nothing is installed
here) and gets pass, fail or skipped (no GPU) in
benchmarks/results/gpu-check-<gpu>.md, rewritten after every item so a run
cut short still leaves what it measured:

1. bf16_channels_last: the trainable's convolutions see channels_last bf16 inputs.
2. gpu_augmentation: a uint8 batch is augmented on the GPU (images/s there and on the CPU).
3. pinned_prefetch: cached batches arrive pinned, from the prefetch thread.
4. epoch_vs_bare: the trainable's images/s against a bare bf16 channels_last
   loop on the same cached images (benchmarks/bench.py item 1; at least 0.9).
5. compile: ``trial.compile`` trains, and its epoch time against eager.
6. cuda_oom: a configuration that cannot fit raises TrialOutOfMemoryError and
   gives its memory back.
7. memory_between_trials: two trials in one process (as Ray reuses a worker)
   leave the allocator where it started.
8. packing: four trials at 0.25 GPU against one at 1.0 (Ray Tune; at least 2x).

    python -m benchmarks.gpu_check [--out DIR] [--only ITEM ...]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.bench import RESULTS, device_and_precision, measure_epoch, write_images
from trainables.augment import build_augmentation
from trainables.batches import open_splits
from trainables.cache import plan_cache
from trainables.data import make_split, read_split, write_split
from trainables.faults import TrialOutOfMemoryError, release_memory
from trainables.finetune import TrialSetup, fit_trial, train
from trainables.hparams import HParams

Result = dict[str, Any]  # status: pass | fail | skipped; detail: one line
NO_GPU: Result = {"status": "skipped", "detail": "no CUDA device"}
MIB = 1024**2


def _setup(work: Path, data_root: Path, image_size: int, **options: Any) -> TrialSetup:
    """A trial's setup over the digits images, their cache built once per size."""
    folder = work / f"setup-{image_size}"
    split_csv = folder / "split.csv"
    if not split_csv.exists():
        folder.mkdir(parents=True)
        frame = make_split(str(data_root), None, val_fraction=0.15, test_fraction=0.15, seed=0)
        write_split(frame, split_csv)
    cache = plan_cache(split_csv, str(data_root), image_size, folder, None)
    fields = {"max_epochs": 2, "batch_size": 128, "precision": "bf16", "cpus": 2} | options
    max_epochs, batch_size = fields.pop("max_epochs"), fields.pop("batch_size")
    return TrialSetup(
        str(split_csv), str(data_root), image_size, max_epochs, batch_size, cache=cache, **fields
    )


def _hparams(backbone: str = "resnet18") -> HParams:
    return HParams(backbone=backbone, lr=1e-3, augmentation="light", lr_scheduler="none")


def _epochs(setup: TrialSetup, hparams: HParams | None = None) -> list[dict[str, Any]]:
    reported: list[dict[str, Any]] = []
    train(hparams or _hparams(), setup, report=lambda metrics, _: reported.append(metrics))
    return reported


def check_bf16_channels_last(work: Path, data_root: Path) -> Result:
    if not torch.cuda.is_available():
        return NO_GPU
    seen: list[tuple[bool, torch.dtype]] = []

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        if isinstance(module, nn.Conv2d) and module.training and len(seen) < 50:
            seen.append((inputs[0].is_contiguous(memory_format=torch.channels_last), output.dtype))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        _epochs(_setup(work, data_root, 64, max_epochs=1))
    finally:
        handle.remove()
    channels_last = sum(c for c, _ in seen)
    bf16 = sum(d == torch.bfloat16 for _, d in seen)
    ok = bool(seen) and channels_last == len(seen) and bf16 == len(seen)
    detail = f"{channels_last}/{len(seen)} conv inputs channels_last, {bf16} outputs bf16"
    return {"status": "pass" if ok else "fail", "detail": detail}


def check_gpu_augmentation(work: Path, data_root: Path) -> Result:
    if not torch.cuda.is_available():
        return NO_GPU
    augment = build_augmentation("strong", 128)
    batch = torch.randint(0, 256, (256, 3, 128, 128), dtype=torch.uint8)
    rates = {}
    for device in ("cpu", "cuda"):
        images = batch.to(device)
        out = augment(images)  # warm-up
        torch.cuda.synchronize()
        tic = time.perf_counter()
        for _ in range(10):
            out = augment(images)
        torch.cuda.synchronize()
        rates[device] = 10 * len(batch) / (time.perf_counter() - tic)
        if device == "cuda" and out.device.type != "cuda":
            return {"status": "fail", "detail": f"augmented batch on {out.device}"}
    detail = (
        f"'strong' at 128 px: {rates['cuda']:.0f} images/s on the GPU, "
        f"{rates['cpu']:.0f} on the CPU ({rates['cuda'] / rates['cpu']:.1f}x)"
    )
    return {"status": "pass", "detail": detail, "gpu_images_per_s": rates["cuda"]}


def check_pinned_prefetch(work: Path, data_root: Path) -> Result:
    if not torch.cuda.is_available():
        return NO_GPU
    setup = _setup(work, data_root, 64)
    _, splits, _ = open_splits(
        read_split(Path(setup.split_csv)), setup.data_root, 64, setup.cache, pin=True
    )
    threads = set()
    pinned = total = 0
    for images, _ in splits["train"].batches(128, generator=torch.Generator().manual_seed(0)):
        threads |= {t.name for t in threading.enumerate()}
        pinned += images.is_pinned()
        total += 1
    ok = total > 0 and pinned == total and "ftsweep-prefetch" in threads
    detail = (
        f"{pinned}/{total} batches pinned; prefetch thread seen: {'ftsweep-prefetch' in threads}"
    )
    return {"status": "pass" if ok else "fail", "detail": detail}


def check_epoch_vs_bare(work: Path, data_root: Path) -> Result:
    if not torch.cuda.is_available():
        return NO_GPU
    args = argparse.Namespace(
        backbone="resnet18", image_size=64, batch_size=128, epoch_runs=3, repeats=2
    )
    figures = measure_epoch(data_root, work, args)
    detail = (
        f"resnet18 at 64 px: trainable {figures['trainable_images_per_s']:.0f} images/s, "
        f"bare loop {figures['bare_images_per_s']:.0f} ({figures['ratio']:.2f}; target >= 0.9)"
    )
    return {"status": "pass" if figures["met"] else "fail", "detail": detail, **figures}


def check_compile(work: Path, data_root: Path) -> Result:
    if not torch.cuda.is_available():
        return NO_GPU
    eager = _epochs(_setup(work, data_root, 64, max_epochs=3))
    compiled = _epochs(_setup(work, data_root, 64, max_epochs=3, compile=True))
    seconds = [
        min(r["epoch_seconds"] for r in run[1:]) for run in (eager, compiled)
    ]  # the first epoch compiles
    ok = len(compiled) == 3 and compiled[-1]["val_accuracy"] > 0.5
    detail = (
        f"3 epochs: eager {seconds[0]:.2f} s/epoch, compiled {seconds[1]:.2f} "
        f"(first compiled epoch {compiled[0]['epoch_seconds']:.1f} s); "
        f"val_accuracy {eager[-1]['val_accuracy']:.3f} vs {compiled[-1]['val_accuracy']:.3f}"
    )
    return {"status": "pass" if ok else "fail", "detail": detail}


def check_cuda_oom(work: Path, data_root: Path) -> Result:
    if not torch.cuda.is_available():
        return NO_GPU
    release_memory()
    before = torch.cuda.memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    # The whole training split in one batch of 512 px images through resnet152:
    # several times the memory of any GPU made.
    setup = _setup(work, data_root, 512, max_epochs=1, batch_size=4096)
    try:
        fit_trial(_hparams("resnet152"), setup, report=lambda *_: None)
    except TrialOutOfMemoryError as error:
        after = torch.cuda.memory_allocated()
        reserved = torch.cuda.memory_reserved()
        ok = after - before < 64 * MIB and reserved < total // 4
        detail = (
            f"raised: {str(error)[:120]}...; allocated after {after / MIB:.0f} MiB "
            f"(before {before / MIB:.0f}), reserved {reserved / MIB:.0f} MiB"
        )
        return {"status": "pass" if ok else "fail", "detail": detail}
    return {"status": "fail", "detail": f"no out-of-memory error on {total / 1024**3:.0f} GiB"}


def check_memory_between_trials(work: Path, data_root: Path) -> Result:
    if not torch.cuda.is_available():
        return NO_GPU
    release_memory()
    start = torch.cuda.memory_allocated()
    after = []
    for backbone in ("resnet50", "resnet18"):
        setup = _setup(work, data_root, 64, max_epochs=1)
        fit_trial(_hparams(backbone), setup, report=lambda *_: None)
        after.append(torch.cuda.memory_allocated())
    ok = all(a - start < 16 * MIB for a in after)
    detail = (
        f"allocated before {start / MIB:.0f} MiB, after each trial "
        + ", ".join(f"{a / MIB:.0f}" for a in after)
        + f" MiB; reserved now {torch.cuda.memory_reserved() / MIB:.0f} MiB"
    )
    return {"status": "pass" if ok else "fail", "detail": detail}


def check_packing(work: Path, data_root: Path) -> Result:
    if not torch.cuda.is_available():
        return NO_GPU
    import ray

    from benchmarks.bench import measure_packing

    args = argparse.Namespace(epochs=3, batch_size=128, lr_range=(3e-4, 3e-3))
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        figures = measure_packing(work, data_root, args)
    finally:
        ray.shutdown()
    detail = (
        f"4 trials at 0.25 GPU: {figures['four_packed_images_per_s']:.0f} images/s, "
        f"1 at 1.0: {figures['one_trial_images_per_s']:.0f} ({figures['ratio']:.2f}x; target >= 2x)"
    )
    return {"status": "pass" if figures["met"] else "fail", "detail": detail, **figures}


CHECKS: dict[str, Callable[[Path, Path], Result]] = {
    "bf16_channels_last": check_bf16_channels_last,
    "gpu_augmentation": check_gpu_augmentation,
    "pinned_prefetch": check_pinned_prefetch,
    "epoch_vs_bare": check_epoch_vs_bare,
    "compile": check_compile,
    "cuda_oom": check_cuda_oom,
    "memory_between_trials": check_memory_between_trials,
    "packing": check_packing,
}


def markdown(machine: str, results: dict[str, Result], seconds: float) -> str:
    rows = [
        "# gpu-check",
        "",
        f"Machine: {machine}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
        f"{seconds / 60:.1f} min. Written by `make gpu-check` (benchmarks/gpu_check.py).",
        "",
        "| # | item | result | seconds | detail |",
        "|---|---|---|---|---|",
    ]
    for number, (name, result) in enumerate(results.items(), start=1):
        detail = str(result["detail"]).replace("|", "/").replace("\n", " ")
        seconds = result.get("seconds", 0.0)
        rows.append(f"| {number} | {name} | {result['status']} | {seconds:.1f} | {detail} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the .md file")
    parser.add_argument("--only", nargs="*", choices=list(CHECKS), default=list(CHECKS))
    args = parser.parse_args(argv)
    _, _, machine = device_and_precision()
    slug = re.sub(r"[^a-z0-9]+", "-", machine.lower()).strip("-") or "cpu"
    out = args.out / f"gpu-check-{slug}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="ftsweep-gpu-check-") as tmp:
        work = Path(tmp)
        data_root = write_images(work / "data", 64)
        for name in args.only:
            tic = time.time()
            print(f"{name} ...", flush=True)
            try:
                result = CHECKS[name](work, data_root)
            except Exception as error:  # one item failing must not cost the others
                line = traceback.format_exception_only(type(error), error)[-1].strip()
                result = {"status": "fail", "detail": f"raised {line}"}
            finally:
                release_memory()
            result["seconds"] = time.time() - tic
            results[name] = result
            print(f"{name}: {result['status']}: {result['detail']}", flush=True)
            out.write_text(markdown(machine, results, time.time() - started))
    print(f"written: {out}")
    return 0 if all(r["status"] != "fail" for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
