"""What a validated space holds: frozen dataclasses, one per section of the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from search.space.params import Param, resolve
from trainables.data import Split, build_split
from trainables.limits import Limit

SAMPLERS = ("tpe", "random", "gp", "cmaes", "qmc")
PRECISIONS = ("bf16", "fp16", "fp32")
SCHEDULERS = ("asha", "none")


@dataclass(frozen=True)
class DataSpec:
    path: str | None = None  # an ImageFolder
    manifest: str | None = None  # a CSV or Parquet file of path,label[,split][,group]
    source: str | None = None  # built-in: digits
    image_size: int = 224
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    bad_files: str = "skip"  # unreadable images, non-image files: skip (warn) or fail
    cache_budget: int | None = None  # bytes of decoded images to cache per node; None: half the RAM
    sampler: str = "uniform"  # training batches: uniform, or balanced (each class equally often)

    @property
    def root(self) -> str | None:
        """The folder split.csv's relative paths start from: the ImageFolder, or
        the manifest's folder; None for a built-in source."""
        if self.manifest is not None:
            return str(Path(self.manifest).resolve().parent)
        return str(Path(self.path).resolve()) if self.path is not None else None

    @property
    def described(self) -> str:
        """The data in a few words, for people."""
        if self.manifest is not None:
            return f"manifest {self.manifest}"
        return self.path or f"built-in `{self.source}`"

    def split(self) -> pd.DataFrame:
        """Every image with its label and split (train/val/test), stratified and seeded."""
        return self.scan().frame

    def scan(self) -> Split:
        """The split, and what the up-front data scan left out (trainables/scan.py)."""
        return build_split(
            self.path,
            self.source,
            manifest=self.manifest,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            bad_files=self.bad_files,
        )


@dataclass(frozen=True)
class TrialSpec:
    max_epochs: int = 20
    batch_size: int = 64
    metric: str = "val_accuracy"
    mode: str = "max"
    precision: str = "bf16"
    max_failures: int = 2  # retries of a failed trial, each from its last checkpoint
    compile: bool = False  # torch.compile each trial's model


@dataclass(frozen=True)
class SchedulerSpec:
    type: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class SearchSpec:
    num_samples: int = 16
    max_concurrent: int = 4
    time_budget_s: float | None = None
    sampler: str = "tpe"
    seed: int = 0
    start_from: tuple[dict[str, Any], ...] = ()  # keyed by Param.key
    scheduler: SchedulerSpec = SchedulerSpec()
    finalists: int = 3  # top trials (by the metric) evaluated on the test split at the end
    constraints: tuple[Limit, ...] = ()  # hard limits (trainables/limits.py)
    warm_start: str | None = None  # an earlier sweep's folder whose trials seed the study
    warm_start_split: str = "same"  # "any": take the earlier trials though the split differs


@dataclass(frozen=True)
class ResourcesSpec:
    cpus: float = 1.0
    gpus: float = 0.0
    reuse_actors: bool = True  # a finished trial's worker process runs the next trial


@dataclass(frozen=True)
class Space:
    """A validated search-space file."""

    name: str
    data: DataSpec
    trial: TrialSpec
    search: SearchSpec
    resources: ResourcesSpec
    params: tuple[Param, ...]
    raw: dict[str, Any]  # the file as run (flags applied), for space.yaml

    def resolve(self, config: dict[str, Any]) -> dict[str, Any]:
        """Ray's config of one trial -> ``{column: value}`` of its active parameters."""
        return resolve(self.params, config)

    def hparams(self, config: dict[str, Any]) -> dict[str, Any]:
        """Ray's config -> ``{hyperparameter name: value}`` for the trainable."""
        return {c.rsplit("/", 1)[-1]: v for c, v in self.resolve(config).items()}

    def dump(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.raw, sort_keys=False), encoding="utf-8")
