"""Ghost convolution (Han et al., GhostNet, CVPR 2020, Sec. 3.1), for 2D and 3D alike.

A dense conv produces ceil(out / ratio) "primary" channels; a cheap depthwise conv derives the
remaining "ghost" channels from them; the two are concatenated. With ratio 2 this halves the
parameters and MACs of a dense conv of the same kernel. No normalisation or activation inside:
callers add their own (LightMedSeg, Sec. 3.1 and Eq. 20, normalises after the concatenation).
"""
import math

import torch
from torch import nn


class GhostConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride=1, ratio: int = 2,
                 cheap_kernel_size: int = 3, conv_op=nn.Conv3d):
        super().__init__()
        if ratio < 2:
            raise ValueError(f"ghost ratio must be at least 2, got {ratio}; use a plain conv for ratio 1")
        self.out_channels = out_channels
        primary = math.ceil(out_channels / ratio)
        self.primary = conv_op(in_channels, primary, kernel_size, stride=stride, padding=kernel_size // 2)
        self.cheap = conv_op(primary, primary * (ratio - 1), cheap_kernel_size, padding=cheap_kernel_size // 2,
                             groups=primary)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary(x)
        return torch.cat([primary, self.cheap(primary)], dim=1)[:, :self.out_channels]
