"""How many trials to pack on one GPU, from the model's size and the image size.

A trial too small to keep a GPU busy (a small model at a low resolution)
leaves most of it idle; several such trials on one GPU (``resources.gpus:
0.25``) train about as fast each, so the sweep gets several times the
epochs per GPU-hour. A large one fills the GPU alone: packing it only
time-shares. The rule below is drawn from measurements on an H100 (issue 6):
four packed ResNet-18 trials at 64 px gave 3.7x the images per second of
one (about 10 GFLOP of forward work per step); ResNet-50 at 224 px, batch 64
(about 260 GFLOP per step) gave 1.3x.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchvision.models import get_model_weights

from trainables.models import input_size

# forward GFLOP per training step below which a quarter / half GPU is enough
QUARTER, HALF = 40.0, 120.0
STATE_BYTES = 16  # fp32 weights, gradients and AdamW's two moments, per parameter


@dataclass(frozen=True)
class Packing:
    backbone: str
    size: int  # the input size the model runs at
    step_gflop: float  # forward work of one batch
    state_gib: float  # weights, gradients and optimizer state
    gpus: float  # suggested resources.gpus

    def describe(self, batch_size: int) -> str:
        per_gpu = round(1 / self.gpus)
        return (
            f"{self.backbone} at {self.size} px, batch {batch_size}: {self.step_gflop:.0f} GFLOP "
            f"a step, {self.state_gib:.1f} GiB of weights and optimizer state -> gpus "
            f"{self.gpus:g} ({per_gpu} trial{'s' if per_gpu > 1 else ''} a GPU)"
        )


def suggest(
    backbone: str, image_size: int, batch_size: int, gpu_memory_gib: float | None = None
) -> Packing | None:
    """The packing for one backbone; None when torchvision lists no FLOP count for it."""
    try:
        weights = get_model_weights(backbone).DEFAULT
        crop = getattr(weights.transforms(), "crop_size", [224])[0]  # where _ops was counted
        ops, params = float(weights.meta["_ops"]), int(weights.meta["num_params"])
    except (KeyError, ValueError, AttributeError, TypeError):
        return None
    size = input_size(backbone, image_size)
    step = ops * (size / crop) ** 2 * batch_size
    state = params * STATE_BYTES / 2**30
    gpus = 0.25 if step < QUARTER else 0.5 if step < HALF else 1.0
    if gpu_memory_gib is not None:
        # the packed trials' fixed state must leave room for activations
        while gpus < 1 and state / gpus > 0.5 * gpu_memory_gib:
            gpus *= 2
    return Packing(backbone, size, step, state, gpus)
