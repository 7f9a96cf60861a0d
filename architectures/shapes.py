"""Shape bookkeeping shared by the networks: cumulative strides, padding and cropping.

nnU-Net plans use anisotropic strides and patch sizes the paper networks never saw; the networks
take their strides from the plan and pad any input that the total stride does not divide.
"""
import math
from typing import Sequence

import torch
import torch.nn.functional as F


def cumulative_strides(strides: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """[(1,..), s1, s1*s2, ...]: the stride of the input and of each stage's output."""
    dim = len(strides[0]) if strides else 0
    out = [(1,) * dim]
    for step in strides:
        out.append(tuple(a * int(b) for a, b in zip(out[-1], step)))
    return out


def padded_size(size: Sequence[int], multiple: Sequence[int], minimum: int = 0) -> tuple[int, ...]:
    """Per axis, the smallest multiple of `multiple` that holds the size and is at least `minimum`."""
    return tuple(max(int(minimum), math.ceil(int(s) / int(m)) * int(m)) for s, m in zip(size, multiple))


def pad_to_multiple(x: torch.Tensor, multiple: Sequence[int], minimum: int = 0) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Zero-pad the spatial axes of x (at the end) up to `padded_size(size, multiple, minimum)`.

    Returns the padded tensor and the original spatial size (for `crop_to`).
    """
    size = tuple(x.shape[2:])
    pad = []
    for s, target in zip(reversed(size), reversed(padded_size(size, multiple, minimum))):
        pad += [0, target - s]
    if any(pad):
        x = F.pad(x, pad)
    return x, size


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the spatial axes of x (from the end) to `size`; a no-op when they match."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return x[(slice(None), slice(None)) + tuple(slice(0, int(s)) for s in size)]


def scaled_size(size: Sequence[int], stride: Sequence[int]) -> tuple[int, ...]:
    """The size nnU-Net's deep-supervision targets have at `stride`: round(size / stride)."""
    return tuple(int(round(s / st)) for s, st in zip(size, stride))
