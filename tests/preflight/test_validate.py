"""What `ftsweep validate` explains before a run: the space, the data, trials at
once, the cost of a trial from a timed step, and a warning for each trap."""

from __future__ import annotations

import pytest
from PIL import Image

from search.preflight.validate import concurrency, describe
from search.space.expect import asha_epochs
from search.space.loader import load_space
from tests.conftest import MINIMAL

ROOMY = """
name: t
data: {source: digits, image_size: 16}
trial: {max_epochs: 4, batch_size: 32}
search: {num_samples: 40, scheduler: {type: asha, grace_period: 1, reduction_factor: 2}}
space:
  backbone: resnet18
  weights: none
  optimizer:
    choice:
      adamw: {weight_decay: {loguniform: [1e-5, 1e-1]}}
      sgd: {momentum: {uniform: [0.8, 0.95]}}
  lr: {loguniform: [1e-4, 1e-2]}
"""


def warnings_of(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("warning: ")]


def test_a_space_that_fits_explains_itself_without_warnings(write_space):
    lines = describe(load_space(write_space(ROOMY)))
    text = "\n".join(lines)
    assert warnings_of(lines) == []
    assert "space: 4 searched parameters, 2 of them conditional" in text
    assert "2 constants; 2 combinations of the choices" in text
    assert "data: digits: 1797 images, 10 classes, train 1257, val 270, test 270" in text
    assert "images per class (train/val/test): 0 124/27/27, 1 128/27/27" in text
    assert "resources per trial: 1 CPU, 0 GPU; on this machine at most" in text
    # The timed step: seconds per step, epoch and trial, then the sweep's length.
    assert "cost per trial (a timed training step on this machine's CPU, 1 thread" in text
    assert "  resnet18: " in text and "/epoch" in text and "for 4 epochs" in text
    assert "sweep: 40 trials" in text and "when ASHA stops trials" in text
    assert "(2.0 epochs per trial on average)" in text  # 1 + 1/2 * 1 + 1/4 * 2


@pytest.mark.parametrize(
    ("change", "words"),
    [
        # A budget shorter than the sweep: trials are cut.
        ({"search.time_budget": "1s"}, "search.time_budget 1.0s ends the sweep before it is done"),
        # More combinations and parameters than trials.
        ({"search.num_samples": 1}, "the space is larger than num_samples 1 can cover"),
        # No rung before the last epoch: ASHA never stops a trial.
        ({"search.scheduler.grace_period": 4}, "no trial can be stopped early"),
    ],
)
def test_each_trap_gets_its_warning(write_space, change, words):
    timing = "search.time_budget" in change  # the estimate needs the timed step
    found = warnings_of(describe(load_space(write_space(ROOMY), change), timing=timing))
    assert len(found) == 1 and words in found[0], found


def test_time_budget_warning_says_how_many_trials_finish(write_space):
    space = load_space(write_space(ROOMY), {"search.time_budget": "1s"})
    (found,) = warnings_of(describe(space))
    assert "so about 0 of 40 trials finish" in found and "raise the budget" in found


def test_trials_at_once_on_this_machine_and_on_a_cluster(write_space):
    space = load_space(write_space(MINIMAL), {"search.max_concurrent": 16})
    nodes = [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 4.0}, {"CPU": 0.0}]  # head without CPUs
    assert concurrency(space, nodes) == 12
    gpu = load_space(write_space(MINIMAL), {"resources.gpus": 0.5, "search.max_concurrent": 16})
    assert concurrency(gpu, nodes) == 4  # 2 GPUs at 0.5; the CPU-only nodes take none
    capped = load_space(write_space(MINIMAL), {"search.max_concurrent": 3})
    assert concurrency(capped, nodes) == 3
    lines = "\n".join(describe(space, timing=False, nodes=nodes))
    assert "on the cluster's 3 nodes at most 12 trials at once" in lines


def test_an_image_folder_reports_sizes_and_problems(write_space, tmp_path):
    for label, size in (("cat", (40, 30)), ("dog", (64, 48))):
        (tmp_path / "d" / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", size, (i * 40, 0, 0)).save(tmp_path / "d" / label / f"{i}.png")
    (tmp_path / "d" / "dog" / "broken.jpg").write_bytes(b"not an image")
    space = write_space(
        f"data: {{path: '{tmp_path / 'd'}', image_size: 32, bad_files: skip}}\n"
        "space: {backbone: resnet18, weights: none}\n"
    )
    text = "\n".join(describe(load_space(space), timing=False))
    assert "images per class (train/val/test): cat " in text
    assert "image sizes (12 sampled): short side 30 to 48 px" in text
    assert "trials resize them to 32 px (6 of them smaller: enlarged)" in text
    assert "data scan left out: 1 " in text


def test_asha_epochs():
    assert asha_epochs(4, 1, 2) == pytest.approx(2.0)
    assert asha_epochs(6, 1, 3) == pytest.approx(1 + 2 / 3 + 3 / 9)
    assert asha_epochs(5, 5, 3) == 5.0


def test_timing_many_backbones_keeps_to_its_budget_and_says_what_it_estimated(
    write_space, monkeypatch, caplog
):
    """The input: a space choosing among every torchvision backbone; validate
    printed nothing for 10 minutes. Now it times what fits in the budget,
    prints each as it goes, and estimates the rest from their FLOPs."""
    import time

    from search.preflight import costs

    backbones = ["squeezenet1_1", "resnet18", "resnet50", "vgg16", "densenet121", "convnext_tiny"]
    monkeypatch.setattr(
        costs, "TIMING_BUDGET_S", 0.0
    )  # the first is timed, then the budget is spent
    space = write_space(ROOMY.replace("backbone: resnet18", f"backbone: {{choice: {backbones}}}"))
    tic = time.perf_counter()
    with caplog.at_level("INFO"):
        lines = describe(load_space(space), timing=True)
    assert time.perf_counter() - tic < 60
    described = {
        b: next(line for line in lines if line.strip().startswith(f"{b}:")) for b in backbones
    }
    timed = [b for b in backbones if "estimated" not in described[b]]
    assert len(timed) == 1  # the first, before the budget was spent
    assert all("estimated from its FLOPs" in described[b] for b in backbones if b not in timed)
    assert "(5 of 6 estimated: the timing budget was spent)" in "\n".join(lines)
    assert [b for b in backbones if f"  {b}: " in caplog.text] == backbones  # as it went
    # Estimates follow the FLOPs: resnet50 costs more than resnet18.
    ms = {b: float(described[b].split(":")[1].split("ms")[0]) for b in backbones}
    assert ms["resnet50"] > ms["resnet18"]
