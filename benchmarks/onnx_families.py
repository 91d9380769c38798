"""ONNX export of every torchvision family (and timm's CNN and ViT), against PyTorch.

For each family its smallest backbone (by torchvision's parameter count) is
built untrained for 3 classes at 32 px, written as an exported folder, and
converted with ``ftsweep export --format onnx``'s code (search/model/onnx.py):
dynamo export, onnxruntime run on 12 drawn uint8 images beside PyTorch. The
table gives the largest difference of probabilities (the export fails past
1e-4), the export's seconds and model.onnx's size; a family that cannot be
exported gets the error, which names it. The suite checks six of these
(tests/outputs/test_onnx.py); this covers the rest (about 4 minutes on 2 CPU
cores).

    python -m benchmarks.onnx_families [--only ResNet,ViT] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from search.model.onnx import TOLERANCE
from search.model.onnx_export import convert_to_onnx
from tests.conftest import model_folder, smallest_of
from trainables.backbones import FAMILIES
from trainables.errors import UserError

TIMM = ["timm/convnext_atto.d2_in1k", "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"]


def measure(title: str, backbone: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        source = model_folder(Path(tmp) / "pt", ["c0", "c1", "c2"], backbone, image_size=32)
        images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
        start = time.perf_counter()
        row = {"family": title, "backbone": backbone}
        try:
            difference = convert_to_onnx(source, Path(tmp) / "onnx", images)
        except UserError as error:
            return row | {"seconds": time.perf_counter() - start, "error": str(error)}
        size = (Path(tmp) / "onnx" / "model.onnx").stat().st_size
        return row | {
            "difference": difference,
            "seconds": time.perf_counter() - start,
            "megabytes": size / 1e6,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated family titles (default: all)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    chosen = [(title, smallest_of(f)) for title, f in FAMILIES.items()]
    chosen += [("timm " + name.split("/")[1].split("_")[0], name) for name in TIMM]
    if args.only:
        wanted = set(args.only.split(","))
        chosen = [(t, b) for t, b in chosen if t in wanted]
    rows = []
    for title, backbone in chosen:
        rows.append(measure(title, backbone))
        print(json.dumps(rows[-1], default=float), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    lines = [
        "# ONNX export of each backbone family against PyTorch",
        "",
        f"Smallest backbone of each family, untrained, 3 classes, 32 px; 12 drawn images; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, CPU ({machine}). "
        f"The export fails past {TOLERANCE:g}.",
        "",
        "| family | backbone | largest difference | export s | model.onnx MB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['family']} | {row['backbone']} | failed: {row['error']} | "
                         f"{row['seconds']:.1f} | - |")  # fmt: skip
        else:
            lines.append(
                f"| {row['family']} | {row['backbone']} | {row['difference']:.1e} | "
                f"{row['seconds']:.1f} | {row['megabytes']:.0f} |"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.only:
        (out / "onnx-families-cpu.md").write_text("\n".join(lines) + "\n")
        (out / "onnx-families-cpu.json").write_text(json.dumps(rows, indent=1, default=float))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
