"""CPU training-step time of the default paper models in the default and the channels-last layout.

On CPU, `LightSegTrainer.initialize` (trainers/base.py) lays conv weights out channels-last when the
network's `training_memory_format` says "channels_last": the same parameters and maths, a layout
only. This script measures what that choice is based on: forward + backward with deep supervision
(a stand-in loss, the mean square of every output), float32, on a random batch of the Hippocampus
plan's patch in the default layout (as nnU-Net's data loader delivers it), the weights in either
layout, interleaved per round; minimum and median over rounds.

    python -m nnunet_lightseg.measure.training_layout --threads 1 --rounds 5
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from nnunet_lightseg import registry
from nnunet_lightseg.architectures.fast_inference import channels_last_weights
from nnunet_lightseg.profiling import machine_description
from nnunet_lightseg.measure import DEFAULT_MODELS

PATCH = (40, 56, 40)  # Hippocampus 3d_fullres plan: 1 channel, 3 classes, strides (2, 2, 2) x 3
STRIDES = [(2, 2, 2)] * 3


def step(network: torch.nn.Module, x: torch.Tensor) -> None:
    outputs = network(x)
    sum(o.float().square().mean() for o in outputs).backward()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 1, *PATCH)
    runs = {}
    for name in args.models:
        network = registry.get(name).create(1, 3, 3, STRIDES, deep_supervision=True).train()
        channels_last = copy.deepcopy(network)
        channels_last_weights(channels_last, x.ndim)
        runs[name] = {"default": (network, x), "channels-last": (channels_last, x),
                      "chosen": getattr(network, "training_memory_format", "contiguous")}
    times = {(name, layout): [] for name in runs for layout in ("default", "channels-last")}
    load_before = os.getloadavg()[0]
    for name, run in runs.items():  # warm-up
        for layout in ("default", "channels-last"):
            step(*run[layout])
    for _ in range(args.rounds):
        for name, run in runs.items():
            for layout in ("default", "channels-last"):
                network, batch = run[layout]
                network.zero_grad(set_to_none=True)
                start = time.perf_counter()
                step(network, batch)
                times[(name, layout)].append(time.perf_counter() - start)
    print(f"machine: {machine_description()}, {os.cpu_count()} logical CPUs, torch threads {args.threads}, "
          f"batch {args.batch}x1x{'x'.join(map(str, PATCH))}, {args.rounds} interleaved rounds; load average "
          f"before {load_before:.1f}, after {os.getloadavg()[0]:.1f}\n\n"
          "| model | default min ms | default median ms | channels-last min ms | channels-last median ms | "
          "training_memory_format |\n|---|---|---|---|---|---|")
    for name, run in runs.items():
        d, c = times[(name, "default")], times[(name, "channels-last")]
        print(f"| {name} | {min(d) * 1e3:.0f} | {statistics.median(d) * 1e3:.0f} | {min(c) * 1e3:.0f} | "
              f"{statistics.median(c) * 1e3:.0f} | {run['chosen']} |")


if __name__ == "__main__":
    main()
