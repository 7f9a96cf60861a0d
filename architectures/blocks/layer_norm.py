"""Layer normalisation over the channel axis of channels-first tensors (N, C, *spatial), 2D and 3D alike.

Transformer blocks on feature maps (ConvNeXt-style) normalise each voxel's channel vector; torch's
`nn.LayerNorm` normalises trailing axes, so it would need two permutes per call.
"""
import torch
from torch import nn


class LayerNormChannelsFirst(nn.Module):
    """(x - mean_c) / sqrt(var_c + eps) * weight + bias, statistics over the channel axis only."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)
