"""Measure a network: parameters, multiply-accumulates and CPU latency per patch.

GMAC is counted with `torch.utils.flop_counter.FlopCounterMode` and divided by two (papers in
this field print MACs as "FLOPs"). It counts convolutions and matrix products, not norms or
elementwise ops, on the plain graph (not the CPU inference engine of cpu_inference.py, which
folds and fuses some of them). Latency is the median of timed forward passes in inference mode
after warm-up (`timing.median_seconds`), through the engine, as nnUNetv2_predict runs our networks. A network pads a
patch its total stride does not divide: `forward_cost` says to what size. `check_size` refuses
requests too large to allocate (limits below), before anything is built.
"""
from __future__ import annotations

import math
import platform
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nnunet_lightseg.cpu_inference import enable, plain_path
from nnunet_lightseg.errors import UsageError
from nnunet_lightseg.timing import median_seconds

MAX_CHANNELS = 1024  # input channels or classes
MAX_VALUES = 2 ** 25  # channels x voxels of the input or the output (128 MiB in float32)


def check_size(in_channels: int, classes: int, patch: Sequence[int]) -> None:
    """Raise UsageError when a network for this request would not fit in memory on any usual machine."""
    voxels = math.prod(patch)
    if max(in_channels, classes) > MAX_CHANNELS or max(in_channels, classes) * voxels > MAX_VALUES:
        raise UsageError(f"--in-channels {in_channels}, --classes {classes}, --patch {' '.join(map(str, patch))} "
                         f"is too large to profile: at most {MAX_CHANNELS} channels or classes, and at most {MAX_VALUES:,} "
                         f"values (channels x voxels) per input and output; give fewer channels or a smaller patch.")


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def count_gmac(network: nn.Module, input_shape: Sequence[int]) -> float:
    """Multiply-accumulates (in units of 1e9) of one forward pass on a zero tensor of input_shape."""
    return forward_cost(network, input_shape)[0]


def forward_cost(network: nn.Module, input_shape: Sequence[int]) -> tuple[float, tuple[int, ...]]:
    """(GMAC of one forward pass on a zero tensor of input_shape, the largest spatial size a
    convolution saw): the second is the patch, or the size the network padded it to."""
    largest = tuple(input_shape[2:])

    def record(module, inputs):
        nonlocal largest
        if isinstance(module, (nn.Conv2d, nn.Conv3d)) and inputs[0].dim() == len(input_shape):
            largest = tuple(max(a, b) for a, b in zip(largest, inputs[0].shape[2:]))

    was_training = network.training
    network.eval()
    handle = nn.modules.module.register_module_forward_pre_hook(record)
    try:
        with torch.inference_mode(), plain_path(), FlopCounterMode(display=False) as counter:
            network(torch.zeros(tuple(input_shape)))
    finally:
        handle.remove()
        network.train(was_training)
    return counter.get_total_flops() / 2e9, largest


def measure_latency(network: nn.Module, input_shape: Sequence[int], repeats: int = 5, warmup: int = 1,
                    threads: int | None = None) -> dict:
    """Median seconds per forward pass on CPU (through the inference engine, as nnUNetv2_predict
    runs the network), with the settings that produced it."""
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        enable(network).eval()
        x = torch.randn(tuple(input_shape))
        with torch.inference_mode():
            latency = median_seconds(lambda: network(x), repeats, warmup)
        return {"latency_s": latency, "latency_runs": repeats, "warmup_runs": warmup,
                "threads": torch.get_num_threads(), "device": "cpu", "mode": "torch.inference_mode, eval, float32"}
    finally:
        torch.set_num_threads(previous_threads)


def machine_description() -> dict:
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    processor = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": processor, "python": platform.python_version(), "torch": torch.__version__}
