"""Measure a network: parameters, multiply-accumulates and CPU latency per patch.

GMAC is counted with `torch.utils.flop_counter.FlopCounterMode` and divided by two (papers in
this field print MACs as "FLOPs"). It counts convolutions and matrix products, not norms or
elementwise ops, on the plain graph (not the inference fast path of
architectures/fast_inference.py, which folds and fuses some of them). Latency is the median of
timed forward passes in inference mode after warm-up (`timing.median_seconds`).
"""
from __future__ import annotations

import platform
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nnunet_lightseg.architectures.fast_inference import plain_path
from nnunet_lightseg.timing import median_seconds


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def count_gmac(network: nn.Module, input_shape: Sequence[int]) -> float:
    """Multiply-accumulates (in units of 1e9) of one forward pass on a zero tensor of input_shape."""
    was_training = network.training
    network.eval()
    with torch.inference_mode(), plain_path(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(tuple(input_shape)))
    network.train(was_training)
    return counter.get_total_flops() / 2e9


def measure_latency(network: nn.Module, input_shape: Sequence[int], repeats: int = 5, warmup: int = 1,
                    threads: int | None = None) -> dict:
    """Median seconds per forward pass on CPU, with the settings that produced it."""
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        network.eval()
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
