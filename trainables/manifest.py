"""A manifest: a CSV or Parquet file that lists the images and their labels.

Columns ``path`` and ``label``; optional ``split`` (train, val or test) and
``group`` (a patient, product or video id: images of one group never go to
two splits). Other columns are ignored. A path is relative to the manifest's
folder, or absolute. Every row is checked before any trial starts: a missing
column, an empty path or label, a file that does not exist, an unknown split
value, one file listed twice, a group in two splits of a given ``split``
column are errors naming the file, the row and the column; images that do not
decode, and rows that are not regular files, go through ``data.bad_files`` as
an ImageFolder's do (trainables/scan.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd

from trainables.errors import UserError
from trainables.scan import SHOWN, Problem, decode_all

REQUIRED = ("path", "label")
OPTIONAL = ("split", "group")
SPLIT_VALUES = ("train", "val", "test")
CSV_EXTENSIONS = (".csv", ".tsv", ".txt")
PARQUET_EXTENSIONS = (".parquet", ".pq")


def read_manifest(file: Path) -> pd.DataFrame:
    """The manifest's rows as text (columns path, label[, split][, group]) with
    ``row``: the row's number as the user finds it (a CSV's line number; a
    Parquet file's row, from 1)."""
    where = str(file)
    if not file.is_file():
        raise UserError(
            "the manifest does not exist or is not a file; set data.manifest to a CSV or "
            "Parquet file with columns path and label (optional: split, group)",
            where,
        )
    suffix = file.suffix.lower()
    try:
        if suffix in PARQUET_EXTENSIONS:
            frame = pd.read_parquet(file).astype(object)
            first_row = 1
        elif suffix in CSV_EXTENSIONS:
            sep = "\t" if suffix == ".tsv" else ","
            frame = pd.read_csv(
                file, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True
            )
            first_row = 2  # line 1 is the header
        else:
            raise UserError(
                f"a manifest is a CSV ({', '.join(CSV_EXTENSIONS)}) or Parquet "
                f"({', '.join(PARQUET_EXTENSIONS)}) file; '{suffix or 'no extension'}' is "
                "neither: rename it or convert it",
                where,
            )
    except UserError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot read the manifest ({first[:300]}); save it as UTF-8 CSV with a header "
            "line, or as Parquet",
            where,
        ) from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise UserError(
            f"the manifest has no column {' or '.join(repr(c) for c in missing)} (its columns: "
            f"{', '.join(repr(c) for c in frame.columns) or 'none'}); it needs path and label, "
            "and may have split and group",
            where,
        )
    if frame.empty:
        raise UserError("the manifest lists no images; add rows under its header", where)
    kept = [c for c in (*REQUIRED, *OPTIONAL) if c in frame.columns]
    frame = frame[kept].map(_text)
    return frame.assign(row=range(first_row, first_row + len(frame))).reset_index(drop=True)


def scan_manifest(file: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Checks every row; returns the usable rows (path as written, label[,
    split][, group]) and the images left to ``data.bad_files``.

    Raises UserError naming the rows for what only the user can fix.
    """
    frame = read_manifest(file)
    root = file.parent
    where = str(file)
    _refuse(frame, frame["path"] == "", "path", "is empty: give each row an image's path", where)
    _refuse(frame, frame["label"] == "", "label", "is empty: give each row its class", where)
    if "split" in frame:
        frame["split"] = frame["split"].str.lower()
        unknown = ~frame["split"].isin(SPLIT_VALUES)
        _refuse(
            frame,
            unknown,
            "split",
            f"is not one of {', '.join(SPLIT_VALUES)} (found "
            f"{sorted(set(frame.loc[unknown, 'split']))[:SHOWN]}); fix it, or drop the column "
            "to let ftsweep split",
            where,
        )
        if "group" in frame:
            _one_split_per_group(frame, where)
    frame["path"] = frame["path"].map(lambda p: Path(p).as_posix())
    exists = frame["path"].map(lambda p: os.path.lexists(root / p))
    _refuse(
        frame,
        ~exists,
        "path",
        f"does not exist (a relative path is read from the manifest's folder, {root})",
        where,
    )
    problems: list[Problem] = []
    keys: dict[tuple[int, int], int] = {}
    usable = []
    for index, item in frame["path"].items():
        path = root / item
        try:
            info = path.stat()  # where a link leads
        except (OSError, RuntimeError) as exc:  # a broken link, a loop of links
            problems.append(Problem(item, "link", f"cannot be followed ({exc})"[:200]))
            usable.append(False)
            continue
        if not stat.S_ISREG(info.st_mode):  # opening a pipe would wait forever
            problems.append(Problem(item, "not_a_file", "not a regular file"))
            usable.append(False)
            continue
        key = (info.st_dev, info.st_ino)
        if key in keys:
            first = int(frame.loc[keys[key], "row"])
            raise UserError(
                f"row {frame.loc[index, 'row']}, column path: '{item}' is the same file as row "
                f"{first} ('{frame.loc[keys[key], 'path']}'); list each image once",
                where,
            )
        keys[key] = int(index)
        usable.append(True)
    frame = frame[pd.Series(usable, index=frame.index)]
    verdicts = decode_all([root / p for p in frame["path"]], None)
    bad = [v is not None for v in verdicts]
    problems += [
        Problem(p, "unreadable", v) for p, v in zip(frame["path"], verdicts, strict=True) if v
    ]
    kept = frame[[not b for b in bad]]
    return kept.drop(columns="row").reset_index(drop=True), problems


def _one_split_per_group(frame: pd.DataFrame, where: str) -> None:
    """A group's images must all be in one split of the manifest's split column."""
    grouped = frame[frame["group"] != ""].groupby("group")["split"].nunique()
    straddling = grouped[grouped > 1]
    if straddling.empty:
        return
    group = straddling.index[0]
    rows = frame[frame["group"] == group]
    places = ", ".join(f"row {r} in {s}" for r, s in zip(rows["row"], rows["split"], strict=True))
    raise UserError(
        f"column group: group '{group}' is in more than one split ({places[:400]}); "
        f"{len(straddling)} group(s) straddle splits. Put each group's rows in one split, or "
        "drop the split column to let ftsweep split by group",
        where,
    )


def _refuse(frame: pd.DataFrame, mask: pd.Series, column: str, problem: str, where: str) -> None:
    if not mask.any():
        return
    rows = frame.loc[mask, "row"].tolist()
    shown = ", ".join(str(r) for r in rows[:SHOWN])
    more = f" and {len(rows) - SHOWN} more" if len(rows) > SHOWN else ""
    noun = "row" if len(rows) == 1 else "rows"
    value = frame.loc[mask, column].iloc[0] if column == "path" else None
    first = f" ('{value}')" if value else ""
    raise UserError(f"{noun} {shown}{more}, column {column}{first}: {problem}", where)


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None, NaN
        return ""
    return str(value).strip()
