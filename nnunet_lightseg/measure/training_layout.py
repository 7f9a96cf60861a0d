"""CPU training-step time of the default paper models in the default and the channels-last layouts.

On CPU, `LightSegTrainer.initialize` lays the conv weights of the networks in
`trainers/training_layout.CHANNELS_LAST_TRAINING` out channels-last, and hands them their input
batches channels-last where that table says so: the same parameters and maths, a layout only.
This script measures what those choices are based on: forward + backward with deep
supervision (a stand-in loss, the mean square of every output), float32, on a random batch of the
Hippocampus plan's patch, in three layouts: default; channels-last weights (the batch as nnU-Net's
data loader delivers it); channels-last weights and batch. Interleaved per round; minimum and
median over rounds.

    python -m nnunet_lightseg.measure.training_layout --threads 1 --rounds 5
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics

import torch

from nnunet_lightseg import registry
from nnunet_lightseg.memory_layout import channels_last_format, channels_last_weights, to_channels_last
from nnunet_lightseg.nnunet_env import DEFAULT_MODELS
from nnunet_lightseg.profiling import machine_description
from nnunet_lightseg.timing import timed_runs
from nnunet_lightseg.trainers.training_layout import CHANNELS_LAST_TRAINING

PATCH = (40, 56, 40)  # Hippocampus 3d_fullres plan: 1 channel, 3 classes, strides (2, 2, 2) x 3
STRIDES = [(2, 2, 2)] * 3
LAYOUTS = ("default", "weights", "weights+input")


def _chosen(network: torch.nn.Module) -> str:
    if type(network) not in CHANNELS_LAST_TRAINING:
        return "contiguous / contiguous"
    return f"channels_last / {'channels_last' if CHANNELS_LAST_TRAINING[type(network)] else 'contiguous'}"


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
        network = registry.get(name).create(registry.Plan(1, 3, PATCH, STRIDES, deep_supervision=True)).train()
        channels_last = copy.deepcopy(network)
        channels_last_weights(channels_last, x.ndim)
        runs[name] = {"default": (network, x), "weights": (channels_last, x),
                      "weights+input": (channels_last, to_channels_last(x, channels_last_format(x.ndim))),
                      "chosen": _chosen(network)}
    load_before = os.getloadavg()[0]
    calls = {(name, layout): (lambda network=run[layout][0], batch=run[layout][1]: step(network, batch))
             for name, run in runs.items() for layout in LAYOUTS}
    times = timed_runs(calls, repeats=args.rounds, warmup=1,
                       before_each=lambda key: runs[key[0]][key[1]][0].zero_grad(set_to_none=True))
    print(f"machine: {machine_description()}, {os.cpu_count()} logical CPUs, torch threads {args.threads}, "
          f"batch {args.batch}x1x{'x'.join(map(str, PATCH))}, {args.rounds} interleaved rounds; load average "
          f"before {load_before:.1f}, after {os.getloadavg()[0]:.1f}\n\n"
          "| model | default min / median ms | channels-last weights | channels-last weights and input | "
          "chosen for weights / input |\n|---|---|---|---|---|")
    for name, run in runs.items():
        cells = [f"{min(times[(name, l)]) * 1e3:.0f} / {statistics.median(times[(name, l)]) * 1e3:.0f}" for l in LAYOUTS]
        print(f"| {name} | {' | '.join(cells)} | {run['chosen']} |")


if __name__ == "__main__":
    main()
