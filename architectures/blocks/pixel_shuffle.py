"""Pixel shuffle and its inverse (space-to-depth) with a per-axis factor, for 2D and 3D.

torch's `pixel_shuffle` is 2D and isotropic; nnU-Net plans need anisotropic factors such as (1, 2, 2).
Channel layout (as torch's 2D op): channel c * prod(f) + offset, the offset running over the
factor grid in C order.
"""
import math
from typing import Sequence

import torch


def pixel_shuffle(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """(N, C * prod(f), *S) -> (N, C, *(S * f)): depth-to-space."""
    factors = tuple(int(f) for f in factors)
    dim, n = len(factors), x.shape[0]
    if all(f == 1 for f in factors):
        return x
    size = x.shape[2:]
    c = x.shape[1] // math.prod(factors)
    x = x.reshape(n, c, *factors, *size)
    # (N, C, f0.., S0..) -> (N, C, S0, f0, S1, f1, ...)
    order = [0, 1] + [i for a in range(dim) for i in (2 + dim + a, 2 + a)]
    return x.permute(order).reshape(n, c, *(s * f for s, f in zip(size, factors)))


def pixel_unshuffle(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """(N, C, *(S * f)) -> (N, C * prod(f), *S): space-to-depth, the inverse of `pixel_shuffle`."""
    factors = tuple(int(f) for f in factors)
    dim, n, c = len(factors), x.shape[0], x.shape[1]
    if all(f == 1 for f in factors):
        return x
    size = tuple(s // f for s, f in zip(x.shape[2:], factors))
    x = x.reshape(n, c, *(i for s, f in zip(size, factors) for i in (s, f)))
    # (N, C, S0, f0, S1, f1, ...) -> (N, C, f0.., S0..)
    order = [0, 1] + [3 + 2 * a for a in range(dim)] + [2 + 2 * a for a in range(dim)]
    return x.permute(order).reshape(n, c * math.prod(factors), *size)

