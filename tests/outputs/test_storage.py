"""Shared storage (search/storage.py) through pyarrow, and the per-node data check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from search.engine.cluster import _readable
from search.outputs.storage import (
    STORAGE_FILE,
    experiment_root,
    local_checkpoint,
    local_sweep,
    push,
    read_storage,
    storage_location,
    stored_sweep,
    tune_dir,
    write_storage,
)
from trainables.errors import UserError


def _sweep(results: Path) -> Path:
    """A results folder as a finished sweep leaves it, without its experiment."""
    sweep = results / "s"
    (sweep / "best").mkdir(parents=True)
    (sweep / "space.yaml").write_text("name: s\n")
    (sweep / "split.csv").write_text("path,label,split\n")
    (sweep / "best" / "model.safetensors").write_bytes(b"w" * 100)
    (sweep / "cache").mkdir()
    (sweep / "cache" / "images.u8").write_bytes(b"\0" * 100)  # node-local: never copied
    return sweep


def _experiment(tune: Path) -> Path:
    checkpoint = tune / "trial_a" / "checkpoint_000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.pt").write_bytes(b"s" * 1000)
    (checkpoint / "meta.json").write_text("{}")
    (tune / "trial_a" / "result.json").write_text('{"epoch": 1}\n')
    (tune / "experiment_state-x.json").write_text("{}")
    return checkpoint


def test_object_storage_round_trip(tmp_path: Path) -> None:
    """A file:// URI goes through pyarrow like s3:// or gs:// would."""
    sweep = _sweep(tmp_path / "results")
    location = storage_location(f"file://{tmp_path}/bucket", "s")
    assert location == f"file://{tmp_path}/bucket/s" and not stored_sweep(location)
    write_storage(sweep, location)
    assert read_storage(sweep) == location and experiment_root(sweep) == location
    push(sweep)
    stored = tmp_path / "bucket" / "s"
    assert (stored / "best" / "model.safetensors").read_bytes() == b"w" * 100
    assert not (stored / "cache").exists()
    assert json.loads((stored / STORAGE_FILE).read_text()) == {"storage": "."}
    checkpoint = _experiment(stored / "tune")  # what Ray writes there
    assert stored_sweep(location)

    # Another machine: the sweep's files come down; the weights only when needed.
    elsewhere = local_sweep(location, tmp_path / "laptop")
    assert elsewhere == tmp_path / "laptop" / "s"
    assert (elsewhere / "space.yaml").read_text() == "name: s\n"
    assert read_storage(elsewhere) == location
    tune = tune_dir(elsewhere)
    assert tune == elsewhere / "tune" and (tune / "trial_a" / "result.json").is_file()
    local = tune / "trial_a" / checkpoint.name
    assert (local / "meta.json").is_file() and not (local / "state.pt").exists()
    assert local_checkpoint(elsewhere, local) == local
    assert (local / "state.pt").read_bytes() == b"s" * 1000
    # Results that grew on the storage are copied down again.
    (checkpoint.parent / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    assert (tune_dir(elsewhere) / "trial_a" / "result.json").read_text().count("epoch") == 2


def test_shared_folder_is_read_in_place(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path / "results")
    location = storage_location(str(tmp_path / "nfs"), "s")
    assert location == str(tmp_path / "nfs" / "s")
    write_storage(sweep, location)
    push(sweep)
    _experiment(Path(location) / "tune")
    assert tune_dir(sweep) == Path(location) / "tune"  # no copy
    assert not (sweep / "tune").exists()
    # The storage folder itself is a sweep folder whose storage is "here".
    assert read_storage(Path(location)) == str(Path(location).resolve())
    assert local_sweep(location, tmp_path / "unused") == Path(location)


def test_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--storage nosuch://x/s: pyarrow cannot open it"):
        storage_location("nosuch://x", "s")
    sweep = _sweep(tmp_path)
    (sweep / STORAGE_FILE).write_text("not json")
    with pytest.raises(UserError, match="storage.json is damaged"):
        read_storage(sweep)


def test_data_check_on_a_node(tmp_path: Path) -> None:
    """What one node's check says when it cannot read the data or write the cache."""
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.png").write_bytes(b"png")
    cache = tmp_path / "cache"
    assert _readable(str(root), ["a/1.png"], str(cache)) is None
    assert cache.is_dir() and not list(cache.iterdir())
    assert "is not a folder there" in _readable(str(tmp_path / "none"), [], None)
    assert "cannot read" in _readable(str(root), ["a/2.png"], None)
    if os.geteuid() != 0:  # root writes anywhere
        cache.chmod(0o500)
        assert "cannot write the image cache" in _readable(None, [], str(cache))
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert "cannot write the image cache" in _readable(None, [], str(blocked / "cache"))
