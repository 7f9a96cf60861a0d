"""A 1x1 conv on a channels-last 3D input, as a matrix product and on oneDNN, by size (cpu_inference.ONEDNN_MIN_VOXELS).

For each number of voxels and (in, out) channels: the best of --rounds calls of `F.linear` over the
channels-last rows (the engine's matrix-product form) and of `mkldnn._convolution_pointwise` (its
oneDNN form), in microseconds.

    python -m nnunet_lightseg.measure.unit_convs --threads 2
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nnunet_lightseg.measure import kernel_timing_arguments, markdown_table
from nnunet_lightseg.profiling import machine_description
from nnunet_lightseg.timing import timed_runs

SIZES = ((1, 1, 1), (5, 7, 5), (10, 14, 10), (10, 28, 20), (20, 28, 20), (40, 56, 40))  # Hippocampus levels
CHANNELS = ((8, 8), (16, 16), (32, 32), (64, 64), (64, 8), (128, 32))


def forms(size, in_channels: int, out_channels: int) -> dict:
    x = torch.randn(1, in_channels, *size).contiguous(memory_format=torch.channels_last_3d)
    weight, bias = torch.randn(out_channels, in_channels, 1, 1, 1), torch.randn(out_channels)
    rows = x.permute(0, 2, 3, 4, 1).reshape(-1, in_channels)
    return {"matrix product": lambda: F.linear(rows, weight.flatten(1), bias),
            "oneDNN": lambda: torch.ops.mkldnn._convolution_pointwise(x, weight, bias, [0, 0, 0], [1, 1, 1], [1, 1, 1],
                                                                      1, "none", [], "")}


def main(argv=None) -> None:
    args = kernel_timing_arguments(__doc__, argv)
    rows = []
    with torch.inference_mode():
        for size in SIZES:
            row = [str(size[0] * size[1] * size[2])]
            for channels in CHANNELS:
                times = timed_runs(forms(size, *channels), repeats=args.rounds, warmup=3)
                row.append(" / ".join(f"{min(times[k]) * 1e6:.0f}" for k in ("matrix product", "oneDNN")))
            rows.append(row)
    print(f"machine: {machine_description()}, torch threads {args.threads}, best of {args.rounds} calls, "
          f"microseconds as matrix product / oneDNN\n")
    print("\n".join(markdown_table(["voxels", *(f"{i} -> {o}" for i, o in CHANNELS)], rows)))


if __name__ == "__main__":
    main()
