"""Where nnU-Net's GradScaler settles for each network under float16 mixed precision, measured on a CPU.

    OMP_NUM_THREADS=2 python -m nnunet_lightseg.measure.loss_scale [--max-steps 12] [--clean 2]

On CUDA nnU-Net trains under float16 autocast with a GradScaler that starts at 2^16, skips every
step whose scaled gradients overflow float16 and halves the scale then; it doubles the scale only
after 2000 clean steps, so early in training the scale stays where the first overflows left it, and
gradients below about 6e-8 / scale underflow to zero. CPU float16 autocast and
`torch.amp.GradScaler("cpu")` apply the same casts and rule, so where a network settles shows
without a GPU (slowly: float16 convolutions are slow on a CPU).

Each network (nnU-Net's PlainConvUNet and every default 3D model, built as `gradient_flow` builds
them) takes nnU-Net's SGD steps (lr 1e-2, Nesterov momentum 0.99, weight decay 3e-5, gradient
clipping at 12) on `gradient_flow`'s synthetic batch under nnU-Net's deep-supervised loss, until
`--clean` steps in a row were not skipped or `--max-steps` were taken. Beside it, the largest
weight gradient of one float32 step at initialisation: how far above 65504 / 2^16 (about 1) the
gradients start. docs/architectures/ultralightunet.md ("Precision") uses it to explain why
UltraLightUNet did not train under mixed precision.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from nnunet_lightseg.measure.gradient_flow import _targets, nnunet_loss, reference_networks, synthetic_batch

INITIAL_SCALE = 2.0 ** 16  # torch's and so nnU-Net's GradScaler default


def largest_weight_gradient(network: torch.nn.Module, image: torch.Tensor, label: torch.Tensor) -> float:
    """max |dL/dw| over all parameters after one float32 forward/backward (no step)."""
    network.train()
    network.zero_grad(set_to_none=True)
    outputs = network(image)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    nnunet_loss(len(outputs))(outputs, _targets(label, outputs)).backward()
    largest = max(p.grad.abs().max().item() for p in network.parameters() if p.grad is not None)
    network.zero_grad(set_to_none=True)
    return largest


def settled_scale(network: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, max_steps: int,
                  clean: int) -> tuple[float, int, int]:
    """(the scale after the last step, steps taken, steps skipped)."""
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    scaler = torch.amp.GradScaler("cpu", init_scale=INITIAL_SCALE)
    network.train()
    skipped = clean_in_a_row = steps = 0
    while steps < max_steps and clean_in_a_row < clean:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            outputs = network(image)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            loss = nnunet_loss(len(outputs))(outputs, _targets(label, outputs))
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        scaler.step(optimizer)
        scaler.update()
        steps += 1
        overflowed = scaler.get_scale() < scale
        skipped += overflowed
        clean_in_a_row = 0 if overflowed else clean_in_a_row + 1
    return scaler.get_scale(), steps, skipped


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--clean", type=int, default=2, help="stop after this many steps in a row without overflow")
    args = parser.parse_args(argv)
    image, label = synthetic_batch(3)
    print("| network | largest weight gradient (float32) | scale settled at | steps | skipped | seconds |\n"
          "|---|---|---|---|---|---|", flush=True)
    for name, _, build in reference_networks(3, image.shape[2]):
        start = time.perf_counter()
        network = build()
        largest = largest_weight_gradient(network, image, label)
        scale, steps, skipped = settled_scale(network, image, label, args.max_steps, args.clean)
        print(f"| {name} | {largest:.3g} | 2^{int(math.log2(scale))} | {steps} | {skipped} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
