"""The shared fine-tuning trainable.

``train`` is the whole recipe in one function: read config -> build data,
model, optimizer -> maybe resume -> per epoch: train, evaluate, checkpoint,
report. It knows nothing of Ray; ``tune_trainable`` is the thin Ray Tune
wrapper that supplies the checkpoint to resume from and the report callback.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs
import torch

from trainables import hparams as hp
from trainables.augment import build_regularisation
from trainables.batches import open_splits
from trainables.cache import CacheFile
from trainables.checkpoints import load_resume_state, save_state
from trainables.data import parse_split, read_split
from trainables.faults import (
    TrialOutOfMemoryError,
    maybe_inject,
    out_of_memory_message,
    release_memory,
)
from trainables.hparams import HParams
from trainables.limits import INFEASIBLE, MEASURED, Limit, broken_limit
from trainables.loop import evaluate_batches, measure_speed, train_epoch
from trainables.models import build_model
from trainables.optim import WeightEMA, build_optimizer, build_scheduler

log = logging.getLogger(__name__)


Report = Callable[[dict[str, Any], Path | None], None]  # metrics, checkpoint (None: none)


@dataclass(frozen=True)
class TrialSetup:
    """Sweep-wide settings every trial shares (not searched)."""

    split_csv: str
    data_root: str | None
    image_size: int
    max_epochs: int
    batch_size: int
    precision: str = "bf16"
    seed: int = 0
    cpus: float = 1.0
    cache: CacheFile | None = None  # None: decode from disk every epoch (over the budget)
    compile: bool = False  # torch.compile the model (worth it for long trials only)
    split_rows: str = ""  # split.csv's text, for workers that cannot read split_csv
    verbose: bool = False  # keep Ray Train's "Checkpoint successfully created" lines
    sampler: str = "uniform"  # data.sampler: uniform, or balanced (classes equally often)
    limits: tuple[Limit, ...] = ()  # search.constraints: those on MEASURED stop a trial early


def split_frame(setup: TrialSetup) -> pd.DataFrame:
    """The sweep's split: carried in the setup, or read from split.csv."""
    if setup.split_rows:
        return parse_split(setup.split_rows)
    return read_split(Path(setup.split_csv))


THREAD_TIMEOUT_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"  # documented in Ray Tune's env vars
THREAD_TIMEOUT_S = 120


def tune_trainable(
    config: dict[str, Any], *, setup: TrialSetup, resolve: Callable[[dict], dict]
) -> None:
    """Ray Tune function trainable: sampled config in, one report per epoch out."""
    import ray
    from ray import tune

    # Ray reuses this worker for the next trial once this one's training
    # thread has ended, waiting TUNE_FUNCTION_THREAD_TIMEOUT_S for it (read
    # here, in the worker, at each reuse; 2 s by default). A trial ASHA stops
    # ends within an epoch's tail (its evaluation, memory release), which on a
    # loaded machine took longer than 2 s, and Ray then errored the *next*
    # trial ("Could not re-use actor"). Seen once on a fresh clone.
    os.environ.setdefault(THREAD_TIMEOUT_ENV, str(THREAD_TIMEOUT_S))
    trial_id = tune.get_context().get_trial_id() or ""
    if not setup.verbose:  # one INFO line per epoch and trial, forwarded to the driver
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    maybe_inject(trial_id, 0)  # only where a test asked for faults (trainables/faults.py)

    node_id = ray.get_runtime_context().get_node_id()  # Ray adds node_ip, not the id

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        maybe_inject(trial_id, metrics[hp.EPOCH])
        metrics[hp.NODE_ID] = node_id
        if checkpoint_dir is None:
            tune.report(metrics)
        else:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    checkpoint = tune.get_checkpoint()
    state: dict[str, Any] | None = None
    unreported = None
    if checkpoint is not None and isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        # In place, so that a damaged or deleted one can fall back to its siblings.
        state, unreported = load_resume_state(Path(checkpoint.path))
    else:
        with checkpoint.as_directory() if checkpoint else nullcontext(None) as resume_dir:
            if resume_dir:
                state, unreported = load_resume_state(Path(resume_dir))
    if unreported is not None:
        # Resumed from a checkpoint whose epoch the driver may never have
        # recorded (killed between the two): report it (again), so that the
        # trial's results, the scheduler and the searcher miss no epoch.
        tune.report({**unreported, hp.NODE_ID: node_id})
    fit_trial(HParams.from_mapping(resolve(config)), setup, report=report, state=state)


def fit_trial(
    hparams: HParams, setup: TrialSetup, *, report: Report, state: dict | None = None
) -> None:
    """``train`` with its memory given back however it ends, and out-of-memory named.

    Raises:
        TrialOutOfMemoryError: the configuration does not fit the accelerator
            (raised after the trial's tensors are freed, so the GPU is usable
            by the trials that share it).
    """
    message = None
    try:
        train(hparams, setup, report=report, state=state)
    except torch.OutOfMemoryError as error:
        message = out_of_memory_message(error, f"{hparams.backbone}, batch_size {setup.batch_size}")
    finally:
        # The traceback of an out-of-memory error holds the model and the
        # batch; it is gone once the except clause ends.
        state = None
        release_memory()
    if message is not None:
        raise TrialOutOfMemoryError(message) from None


def train(
    hparams: HParams, setup: TrialSetup, *, report: Report, state: dict | None = None
) -> None:
    """Fine-tunes one configuration for ``setup.max_epochs`` epochs (or until stopped).

    Long: the trainable's whole rhythm in one function, as STYLE.md asks
    (torchtune's recipes, nanoGPT's train.py): build the data, model,
    optimizer, schedule and regularisation from their groups of ``hparams``;
    resume from ``state``; then per epoch train, evaluate, checkpoint, report.
    """
    torch.set_num_threads(max(1, int(setup.cpus)))
    _seed_everything(setup.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp_dtype, scaler = amp_settings(setup.precision, device)
    torch.backends.cudnn.benchmark = device.type == "cuda"

    classes, splits, decoded = open_splits(
        split_frame(setup),
        setup.data_root,
        setup.image_size,
        setup.cache,
        pin=device.type == "cuda",
        workers=max(0, int(setup.cpus) - 1),  # decoders, when the data set is not cached
    )
    train_set, val = splits["train"], splits["val"]
    model = build_model(
        num_classes=len(classes), image_size=setup.image_size, **hparams.group(hp.MODEL)
    ).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if setup.compile:
        model.compile()  # in place: the state dict keeps its keys
    unfreezes = hparams.unfreeze_at > 0 and model.frozen_depth > 0
    optimizer = build_optimizer(model, **hparams.group(hp.OPTIMIZER))
    steps_per_epoch = -(-len(train_set) // setup.batch_size)
    scheduler = build_scheduler(
        optimizer,
        epochs=setup.max_epochs,
        steps_per_epoch=steps_per_epoch,
        **hparams.group(hp.SCHEDULE),
    )
    counts = torch.bincount(train_set.labels, minlength=len(classes))
    regular = build_regularisation(counts, setup.image_size, **hparams.group(hp.REGULARISATION))
    regular.loss.to(device)  # its class weights
    ema = WeightEMA(model, hparams.ema) if hparams.ema > 0 else None

    parts: dict[str, Any] = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    parts |= {"scaler": scaler, "ema": ema}  # None when off
    epoch, train_seconds, started_at = 0, 0.0, time.time()
    if state is not None:  # a resumed trial: every part as its checkpoint left it
        epoch, train_seconds, started_at = _restore(state, parts)

    num_params = sum(p.numel() for p in model.parameters())
    # Measured in every (re)start of the trial, on the device it trains on, so
    # the leaderboard can trade accuracy against inference cost.
    latency_ms, throughput = measure_speed(
        model, setup.image_size, device, batch_size=setup.batch_size, amp_dtype=amp_dtype
    )
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    measured = {hp.PARAMS: num_params, hp.LATENCY_MS: latency_ms, hp.THROUGHPUT: throughput}
    broken = broken_limit(tuple(k for k in setup.limits if k.key in MEASURED), measured)
    if broken is not None and epoch == 0:  # search.constraints: no epoch is trained
        log.info("infeasible: %s; the trial stops before its first epoch", broken)
        nothing = dict.fromkeys([hp.TRAIN_LOSS, *hp.METRICS], float("nan"))
        report({hp.EPOCH: 0, INFEASIBLE: broken, **nothing, **measured, hp.DEVICE: device_name,
                hp.TRAIN_SECONDS: 0.0, hp.STARTED_AT: started_at, hp.REPORTED_AT: time.time()},
               None)  # fmt: skip
        return
    while epoch < setup.max_epochs:
        if unfreezes and model.frozen_depth and epoch + 1 >= hparams.unfreeze_at:
            log.info("epoch %d: unfreezing the frozen stages", epoch + 1)
            model.unfreeze()
        tic = time.perf_counter()
        batches = train_set.batches(
            setup.batch_size,
            generator=torch.Generator().manual_seed(setup.seed * 100_003 + epoch),
            drop_last=len(train_set) > setup.batch_size,
            balanced=setup.sampler == "balanced",
        )
        train_loss = train_epoch(
            model,
            batches,
            optimizer,
            scheduler,
            regular.loss,
            device,
            amp_dtype=amp_dtype,
            scaler=scaler,
            augment=regular.augment,
            mix=regular.mix,
            grad_clip=hparams.grad_clip,
            after_step=None if ema is None else lambda: ema.update(model),
        )
        scores = evaluate_batches(
            model if ema is None else ema.module,  # with EMA on, the average is what is kept
            val.batches(2 * setup.batch_size),
            device,
            amp_dtype=amp_dtype,
        )
        epoch += 1
        seconds = time.perf_counter() - tic
        train_seconds += seconds
        metrics = {
            hp.EPOCH: epoch,
            hp.TRAIN_LOSS: train_loss,
            hp.VAL_LOSS: scores["loss"],
            hp.VAL_ACCURACY: scores["accuracy"],
            hp.VAL_F1_MACRO: scores["f1_macro"],
            hp.VAL_BALANCED_ACCURACY: scores["balanced_accuracy"],
            hp.VAL_MIN_RECALL: scores["min_recall"],
            hp.EPOCH_SECONDS: seconds,
            hp.TRAIN_SECONDS: train_seconds,
            hp.STARTED_AT: started_at,
            hp.PARAMS: num_params,
            hp.LATENCY_MS: latency_ms,
            hp.THROUGHPUT: throughput,
            hp.DEVICE: device_name,
            hp.IMAGES_DECODED: decoded,
            hp.DATA: "cache" if setup.cache is not None else "stream",
            hp.REPORTED_AT: time.time(),
        }
        with tempfile.TemporaryDirectory() as directory:
            save_state(
                Path(directory),
                metrics,
                **{
                    name: None if part is None else part.state_dict()
                    for name, part in parts.items()
                },
                epoch=epoch,
                train_seconds=train_seconds,
                started_at=started_at,
                rng=_rng_state(),
            )
            report(metrics, Path(directory))


def _restore(state: dict[str, Any], parts: dict[str, Any]) -> tuple[int, float, float]:
    """Loads a checkpoint's state into the trial's parts (None: off); returns
    (epochs done, training seconds so far, when the trial first started)."""
    for name, part in parts.items():
        if part is not None and state.get(name):
            part.load_state_dict(state[name])
    _set_rng_state(state["rng"])
    return state["epoch"], state["train_seconds"], state["started_at"]


def amp_settings(
    precision: str, device: torch.device
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    if device.type != "cuda" or precision == "fp32":
        return None, None
    if precision == "bf16" and torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state["numpy"] = [name, torch.from_numpy(np.array(keys)), pos, has_gauss, gauss]
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, gauss))
