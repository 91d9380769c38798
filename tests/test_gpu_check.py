"""`make gpu-check` stays runnable between GPU machines: on a CPU every item is
skipped and named, and the helpers it trains with still match the trainable."""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, make gpu-check runs it all")
def test_on_a_cpu_every_item_is_listed_as_skipped(tmp_path):
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    (report,) = tmp_path.glob("gpu-check-*.md")
    rows = [line for line in report.read_text().splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[1] for row in rows] == list(gpu_check.CHECKS)
    assert all(" | skipped | " in row and "no CUDA device" in row for row in rows)


def test_its_trial_helpers_train_on_this_machine(tmp_path):
    data_root = gpu_check.write_images(tmp_path / "data", 16)
    setup = gpu_check._setup(tmp_path, data_root, 16, max_epochs=1, batch_size=64, cpus=1)
    (epoch,) = gpu_check._epochs(setup, gpu_check._hparams("squeezenet1_1"))
    assert epoch["epoch"] == 1 and epoch["val_accuracy"] >= 0
