"""The sweep a user writes by hand from the Ray Tune and torchvision tutorials.

The baseline ftsweep is measured against (benchmarks/bench.py): an
ImageFolder read with PIL and transformed image by image every epoch, a
DataLoader, torchvision's model with a new head, AdamW, OptunaSearch and
ASHAScheduler, and a checkpoint written every epoch. Nothing here is tuned
for speed; that is the point. It reads train/ and val/ folders of class
folders, as the tutorials do.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def train_model(
    config: dict[str, Any], *, root: str, image_size: int, epochs: int, batch_size: int
):
    """The tutorial trainable: data, model, epochs; a checkpoint and a report each epoch."""
    torch.set_num_threads(1)
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size, scale=(0.6, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    val_tf = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    train_set = datasets.ImageFolder(os.path.join(root, "train"), train_tf)
    val_set = datasets.ImageFolder(os.path.join(root, "val"), val_tf)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True)
    val_loader = DataLoader(val_set, batch_size=2 * batch_size)

    model = models.get_model(config["backbone"], weights=None)
    model.fc = nn.Linear(model.fc.in_features, len(train_set.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        model.train()
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
        model.eval()
        correct, total, val_loss = 0, 0, 0.0
        with torch.no_grad():
            for images, labels in val_loader:
                outputs = model(images)
                val_loss += float(loss_fn(outputs, labels)) * len(labels)
                correct += int((outputs.argmax(1) == labels).sum())
                total += len(labels)
        with tempfile.TemporaryDirectory() as directory:
            torch.save(
                {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
                Path(directory) / "checkpoint.pt",
            )
            tune.report(
                {
                    "epoch": epoch,
                    "val_accuracy": correct / total,
                    "val_loss": val_loss / total,
                    "reported_at": time.time(),
                },
                checkpoint=tune.Checkpoint.from_directory(directory),
            )


def run_baseline(
    root: Path,
    storage: Path,
    *,
    backbone: str,
    lr_range: tuple[float, float],
    image_size: int,
    epochs: int,
    batch_size: int,
    num_samples: int,
    concurrency: int,
    seed: int = 0,
) -> tune.ResultGrid:
    """Runs the hand-written sweep in the current Ray session; returns its results."""
    import optuna

    trainable = tune.with_parameters(
        train_model, root=str(root), image_size=image_size, epochs=epochs, batch_size=batch_size
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"backbone": backbone, "lr": tune.loguniform(*lr_range)},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed)),
            scheduler=ASHAScheduler(
                time_attr="epoch", max_t=epochs, grace_period=1, reduction_factor=3
            ),
            metric="val_accuracy",
            mode="max",
            num_samples=num_samples,
            max_concurrent_trials=concurrency,
        ),
        run_config=tune.RunConfig(name="baseline", storage_path=str(storage), verbose=0),
    )
    return tuner.fit()
