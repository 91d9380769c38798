"""Data once per node, served in batches; augmentation on tensors matches the presets."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import functional as F

import trainables.data as data_module
from tests.trainables.test_data import draw_folder
from trainables import augment as aug
from trainables.batches import CachedImages, StreamedImages, open_splits
from trainables.cache import CacheFile, ensure_cache, open_cache, parse_budget, plan_cache
from trainables.data import decode_split, item_decoder, make_split, read_split, write_split
from trainables.errors import UserError
from trainables.finetune import TrialSetup, train
from trainables.hparams import HParams


@pytest.fixture
def folder_split(tmp_path) -> tuple[Path, Path]:
    root = draw_folder(tmp_path / "data", {"a": 12, "b": 12, "c": 12}, size=20)
    split_csv = tmp_path / "sweep" / "split.csv"
    split_csv.parent.mkdir()
    write_split(
        make_split(str(root), None, val_fraction=0.25, test_fraction=0.0, seed=0), split_csv
    )
    return root, split_csv


def _build(cache_path: str, key: str, count: int, root: str, split_csv: str, queue) -> None:
    frame = read_split(Path(split_csv))
    cache = CacheFile(cache_path, key, count, 16)
    queue.put(ensure_cache(cache, frame, item_decoder(root, 16)))


def test_cache_is_built_once_by_concurrent_trials_and_mapped(folder_split):
    root, split_csv = folder_split
    cache = plan_cache(split_csv, str(root), 16, split_csv.parent, None)
    assert cache is not None and cache.count == 36
    # Three "trials" of one node ask for the cache at the same time: one decodes.
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(
            target=_build,
            args=(cache.path, cache.key, cache.count, str(root), str(split_csv), queue),
        )
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert sorted(queue.get(timeout=5) for _ in workers) == [0, 0, 36]
    assert cache.is_complete()
    # The cached images are those decode_split gives, in split.csv's row order.
    frame = read_split(split_csv)
    images = open_cache(cache)
    _, sets = decode_split(frame, str(root), 16)
    rows = torch.from_numpy((frame["split"] == "val").to_numpy().nonzero()[0])
    assert torch.equal(images[rows], sets["val"].images)
    # Mapped from the file (shared page cache), not read into the process.
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert cache.path in maps.read_text()


def test_second_trial_does_not_decode_again(folder_split, monkeypatch):
    root, split_csv = folder_split
    calls = []
    real = data_module.load_image
    monkeypatch.setattr(
        data_module, "load_image", lambda path, size: calls.append(path) or real(path, size)
    )
    cache = plan_cache(split_csv, str(root), 16, split_csv.parent, None)
    setup = TrialSetup(str(split_csv), str(root), 16, 1, 8, cache=cache)
    reports: list[dict] = []
    for lr in (1e-3, 3e-3):
        train(HParams("resnet18", lr=lr), setup, report=lambda m, d: reports.append(m))
    assert [r["images_decoded"] for r in reports] == [36, 0]
    assert [r["data"] for r in reports] == ["cache", "cache"]
    assert len(calls) == 36
    # A cache cut off mid-build (no sidecar) is built again, not trusted.
    Path(cache.path).with_suffix(".json").unlink()
    assert not cache.is_complete()
    assert ensure_cache(cache, read_split(split_csv), item_decoder(str(root), 16)) == 36


def test_over_budget_streams_from_disk_with_the_same_result(folder_split):
    root, split_csv = folder_split
    assert plan_cache(split_csv, str(root), 16, split_csv.parent, 1000) is None
    cached = plan_cache(split_csv, str(root), 16, split_csv.parent, None)
    hparams = HParams("resnet18", lr=3e-3, augmentation="strong")
    results = {}
    for name, cache in (("cache", cached), ("stream", None)):
        setup = TrialSetup(str(split_csv), str(root), 16, 2, 8, cache=cache, cpus=2)
        reports: list[dict] = []
        train(hparams, setup, report=lambda m, d, r=reports: r.append(m))
        results[name] = reports
    assert [r["data"] for r in results["stream"]] == ["stream", "stream"]
    for a, b in zip(results["cache"], results["stream"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_split_batches_cover_the_split_in_the_generator_order(folder_split):
    root, split_csv = folder_split
    frame = read_split(split_csv)
    cache = plan_cache(split_csv, str(root), 16, split_csv.parent, None)
    _, cached, decoded = open_splits(frame, str(root), 16, cache)
    _, streamed, _ = open_splits(frame, str(root), 16, None, workers=1)
    assert decoded == 36
    assert isinstance(cached["train"], CachedImages)
    assert isinstance(streamed["train"], StreamedImages)
    for split in ("train", "val"):
        a = list(cached[split].batches(5, generator=torch.Generator().manual_seed(1)))
        b = list(streamed[split].batches(5, generator=torch.Generator().manual_seed(1)))
        assert len(a) == len(b) == -(-len(cached[split]) // 5)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    dropped = list(cached["train"].batches(5, generator=torch.Generator(), drop_last=True))
    assert all(len(y) == 5 for _, y in dropped) and len(dropped) == len(cached["train"]) // 5


def test_cache_budget_sizes():
    assert parse_budget("auto") is None
    assert parse_budget("16GB") == 16 * 2**30
    assert parse_budget("512MiB") == 512 * 2**20
    assert parse_budget(0) == 0
    with pytest.raises(UserError, match="16GB"):
        parse_budget("lots")


def test_cache_budget_in_the_space_file(write_space):
    from search.space.loader import load_space

    text = """
    name: t
    data: {source: digits, image_size: 16, cache_budget: 2GB}
    trial: {compile: true}
    resources: {reuse_actors: false}
    space: {backbone: resnet18, weights: none}
    """
    space = load_space(write_space(text))
    assert space.data.cache_budget == 2 * 2**30
    assert space.trial.compile and not space.resources.reuse_actors
    with pytest.raises(UserError, match=r"space.yaml:2 \(data.cache_budget\)"):
        load_space(write_space(text.replace("2GB", "much")))
    with pytest.raises(UserError, match="true or false"):
        load_space(write_space(text.replace("compile: true", "compile: 3")))


def test_compile_setting_compiles_the_model(folder_split, monkeypatch):
    root, split_csv = folder_split
    compiled = []

    def record(self, *args, **kwargs):  # inductor would take minutes on this CPU
        compiled.append(type(self).__name__)

    monkeypatch.setattr(torch.nn.Module, "compile", record)
    setup = TrialSetup(str(split_csv), str(root), 16, 1, 8, compile=True)
    train(HParams("resnet18"), setup, report=lambda m, d: None)
    assert compiled == ["Classifier"]


# --- augmentation: each preset's batched version equals torchvision's per-image one


def test_resized_crop_and_flip_match_torchvision():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 24, 24), dtype=torch.uint8).float() / 255
    boxes = torch.tensor(
        [[0, 0, 24, 24], [3, 5, 15, 13], [10, 0, 14, 24], [0, 12, 9, 12], [23, 23, 1, 1]]
    )
    flips = torch.tensor([False, True, False, True, False])
    out = aug.resized_crop(images, boxes, 32, flips)
    for k, (top, left, h, w) in enumerate(boxes.tolist()):
        ref = F.resized_crop(images[k], top, left, h, w, [32, 32], antialias=True)
        if flips[k]:
            ref = F.horizontal_flip(ref)
        torch.testing.assert_close(out[k], ref, atol=1e-5, rtol=0)


def test_crop_boxes_follow_random_resized_crop():
    torch.manual_seed(0)
    boxes = aug.crop_boxes(20_000, 32, 32, (0.3, 1.0))
    top, left, h, w = boxes.unbind(1)
    area = (h * w).float() / 1024
    assert area.min() >= 0.28 and area.max() <= 1.0  # rounding moves the edges a little
    ratio = w.float() / h.float()
    assert ratio.min() >= 0.7 and ratio.max() <= 1.43
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h).max() <= 32 and (left + w).max() <= 32
    # the same distribution as torchvision's own sampler (rejections included)
    from torchvision.transforms import RandomResizedCrop

    image = torch.zeros(1, 32, 32)
    theirs = torch.tensor(
        [
            (lambda top, left, hh, ww: hh * ww / 1024)(
                *RandomResizedCrop.get_params(image, [0.3, 1.0], [3 / 4, 4 / 3])
            )
            for _ in range(4000)
        ]
    )
    assert float(area.mean()) == pytest.approx(float(theirs.mean()), abs=0.015)
    assert float(area.std()) == pytest.approx(float(theirs.std()), abs=0.015)


def test_color_jitter_matches_torchvision_per_image():
    torch.manual_seed(1)
    images = torch.rand(4, 3, 10, 10)
    b, c, s, h, _ = aug.jitter_factors(4)
    steps = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    factors = [b, c, s, h]
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        out = aug.color_jitter(images, b, c, s, h, order)
        for k in range(4):
            ref = images[k]
            for op in order:
                ref = steps[op](ref, float(factors[op][k]))
            torch.testing.assert_close(out[k], ref, atol=1e-5, rtol=0)
    assert (b >= 0.6).all() and (b <= 1.4).all() and (h.abs() <= 0.05).all()


def test_random_erasing_matches_torchvision():
    torch.manual_seed(2)
    images = torch.rand(3, 3, 16, 16)
    boxes = torch.tensor([[2, 3, 5, 6], [0, 0, 0, 0], [10, 1, 6, 15]])
    out = aug.erase(images, boxes)
    torch.testing.assert_close(out[0], F.erase(images[0], 2, 3, 5, 6, torch.tensor(0.0)))
    torch.testing.assert_close(out[1], images[1])
    torch.testing.assert_close(out[2], F.erase(images[2], 10, 1, 6, 15, torch.tensor(0.0)))
    drawn = aug.erase_boxes(torch.rand(20_000, 3, 16, 16))
    erased = drawn[:, 2] > 0
    assert erased.float().mean() == pytest.approx(0.25, abs=0.02)
    area = (drawn[erased, 2] * drawn[erased, 3]).float() / 256
    assert area.min() >= 0.01 and area.max() <= 0.4


def test_presets_on_a_batch():
    torch.manual_seed(3)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    none = aug.build_augmentation("none", 16)(images)
    torch.testing.assert_close(none, images.float() / 255)
    for name in aug.PRESETS:
        out = aug.build_augmentation(name, 16)(images)
        assert out.shape == (64, 3, 16, 16) and out.dtype == torch.float32
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        if name != "none":
            changed = (out - none).abs().flatten(1).amax(1) > 1e-6
            assert changed.float().mean() > 0.5  # per-image parameters, not one per batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_memory_is_released_between_trials(folder_split):
    from trainables.finetune import fit_trial

    root, split_csv = folder_split
    cache = plan_cache(split_csv, str(root), 16, split_csv.parent, None)
    setup = TrialSetup(str(split_csv), str(root), 16, 1, 8, cache=cache)
    torch.cuda.synchronize()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    for backbone in ("resnet18", "efficientnet_b0"):  # as a reused actor runs them
        fit_trial(HParams(backbone), setup, report=lambda m, d: None)
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() == allocated
        assert torch.cuda.memory_reserved() <= reserved + 2**21


def test_validate_suggests_a_packing(write_space):
    from search.preflight.packing import suggest
    from search.preflight.validate import describe
    from search.space.loader import load_space

    small, large = suggest("resnet18", 64, 64), suggest("resnet50", 224, 64)
    assert small is not None and large is not None
    assert small.gpus == 0.25 and large.gpus == 1.0  # the 3.7x and 1.3x cases
    assert 8 < small.step_gflop < 12 and 230 < large.step_gflop < 300
    # a 16 GiB GPU cannot hold four copies of a large model's optimizer state
    assert suggest("vit_h_14", 32, 8, gpu_memory_gib=16).gpus == 1.0
    text = """
    name: t
    data: {source: digits, image_size: 64}
    space: {backbone: {choice: [resnet18, resnet50]}, weights: none}
    """
    lines = "\n".join(describe(load_space(write_space(text)), timing=False))
    assert "resnet18 at 64 px, batch 64" in lines and "suggested resources.gpus: 0.25" in lines


def test_slot_utilization():
    import pandas as pd

    from search.outputs.report import slot_utilization

    # two slots: a and b overlap, c follows a; 24 s of epochs in 2 slots x 15 s
    frame = pd.DataFrame(
        {
            "started_at": [0.0, 1.0, 10.0],
            "ended_at": [10.0, 15.0, 15.0],
            "train_seconds": [9.0, 10.0, 5.0],
        }
    )
    assert slot_utilization(frame) == (pytest.approx(24 / 30), 2)
    assert slot_utilization(frame.drop(columns="ended_at")) is None
