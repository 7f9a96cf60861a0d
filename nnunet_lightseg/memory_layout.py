"""Channels-last layout of a network's weights and inputs: shared by the CPU inference engine and CPU training."""
import torch
from torch import nn


def channels_last_format(ndim: int) -> torch.memory_format:
    """The channels-last memory format of `ndim`-axis tensors (4: 2D batches, 5: 3D batches)."""
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def to_channels_last(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """`x` laid out in `memory_format`, with channels-last strides even when it has one channel.

    A one-channel tensor is contiguous in both layouts, so `x.contiguous(memory_format=...)` returns
    it with its default strides, which oneDNN reads as channels-first: the first conv's output, and
    everything after it, would then be channels-first too. It gets explicit strides instead.
    """
    if x.shape[1] == 1:
        return torch.empty_like(x, memory_format=memory_format).copy_(x)
    return x.contiguous(memory_format=memory_format)


def channels_last_weights(module: nn.Module, ndim: int) -> torch.memory_format:
    """Lay the module's `ndim`-axis parameters and buffers (conv weights) out channels-last, in place.

    Parameters stay the same objects (optimisers keep them) and keep their values; returns the
    memory format used.
    """
    memory_format = channels_last_format(ndim)
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.ndim == ndim:
                tensor.data = tensor.data.contiguous(memory_format=memory_format)
    return memory_format
