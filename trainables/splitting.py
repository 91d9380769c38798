"""The sweep's split: stratified by class, by group where rows have groups, seeded.

Where the user gave some splits (train/ val/ test/ folders, a manifest's
split column), the missing ones are split off train.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from trainables.errors import UserError


def given_splits(
    parts: dict[str, pd.DataFrame],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    wheres: dict[str, str],
    names: dict[str, str],
) -> pd.DataFrame:
    """Splits the user gave (train, perhaps val and test); the missing ones are
    split off train. ``wheres``: each split's place for a message, ``names``:
    what the user calls it (``val/``, ``the val rows``)."""
    classes = set(parts["train"]["label"])
    for split, part in parts.items():
        counts = part["label"].value_counts()
        if set(part["label"]) != classes:
            raise UserError(
                f"the classes of {names[split]} differ from {names['train']}: "
                f"missing {sorted(classes - set(part['label']))}, "
                f"extra {sorted(set(part['label']) - classes)} "
                f"(readable images per class in {names[split]}: "
                f"{counts.sort_index().to_dict()}); make them match",
                wheres[split],
            )
    val_frac = 0.0 if "val" in parts else val_fraction
    test_frac = 0.0 if "test" in parts else test_fraction
    frame = split_off(parts["train"], val_frac, test_frac, seed, wheres["train"])
    extra = [part.assign(split=split) for split, part in parts.items() if split != "train"]
    return pd.concat([frame, *extra], ignore_index=True)


def split_off(
    frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int, where: str
) -> pd.DataFrame:
    """Assigns test, then val, out of ``frame`` (the rest is train): stratified
    by class, and with each group's rows in one split where rows have groups
    (a patient's images all in train, or all in test)."""
    _at_least_two_classes(frame, where)
    grouped = "group" in frame and bool((frame["group"] != "").any())
    frame = frame.assign(split="train")
    remaining = frame.index.to_numpy()
    for split, fraction, of_rest in (
        ("test", test_fraction, 1.0),
        ("val", val_fraction, 1.0 - test_fraction),
    ):
        if fraction <= 0:
            continue
        rows = frame.loc[remaining]
        _check_class_sizes(rows["label"].to_numpy(), where)
        cut = _by_group if grouped else _by_class
        keep, take = cut(rows, fraction / of_rest, seed, f"{split} set of {fraction:g}", where)
        frame.loc[take, "split"] = split
        remaining = np.sort(keep)
    lost = sorted(set(frame["label"]) - set(frame.loc[frame["split"] == "train", "label"]))
    if lost:
        raise UserError(
            f"every group of class {lost} went to val or test, so train has none of it; "
            "add groups of these classes, or give a split column",
            where,
        )
    return frame


def _by_class(
    rows: pd.DataFrame, share: float, seed: int, what: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken) row labels: ``share`` of each class taken, within one image."""
    # Here: a trial's worker reads this module and never splits (scikit-learn takes 1.3 s).
    from sklearn.model_selection import train_test_split

    try:
        keep, take = train_test_split(
            rows.index.to_numpy(), test_size=share, stratify=rows["label"], random_state=seed
        )
    except ValueError as exc:
        raise UserError(
            f"cannot split off a stratified {what} ({exc}); add images, lower "
            f"data.{what.split()[0]}_fraction, or provide a {what.split()[0]}/ folder",
            where,
        ) from exc
    return keep, take


def _by_group(
    rows: pd.DataFrame, share: float, seed: int, what: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken) row labels: one fold of scikit-learn's StratifiedGroupKFold,
    about ``share`` of the rows; a row without a group is a group of its own."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = rows["group"].where(rows["group"] != "", "\0row" + rows.index.astype(str))
    folds = max(2, round(1 / share))
    if groups.nunique() < folds:
        raise UserError(
            f"cannot split off a {what} by group: {groups.nunique()} groups, and at least "
            f"{folds} are needed; add groups, lower data.{what.split()[0]}_fraction, or give "
            "a split column",
            where,
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    keep, take = next(splitter.split(rows.index, rows["label"], groups))
    return rows.index.to_numpy()[keep], rows.index.to_numpy()[take]


def _at_least_two_classes(frame: pd.DataFrame, where: str) -> None:
    classes = sorted(frame["label"].unique())
    if len(classes) < 2:
        raise UserError(
            f"a classifier needs at least 2 classes with readable images; found {classes}. "
            "Add class folders, or fix the images the data scan left out",
            where,
        )


def _check_class_sizes(labels: Sequence[str] | np.ndarray, where: str) -> None:
    small = {name: n for name, n in Counter(labels).items() if n < 3}
    if small:
        raise UserError(
            f"classes with fewer than 3 images cannot be split into train/val/test: {small}; "
            "add images to them or remove them",
            where,
        )
