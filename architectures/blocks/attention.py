"""Channel and spatial attention (the CBAM pair), for 2D and 3D alike.

UltraLightUNet's CMFA (Rahman & Marculescu, Sec. 3.2) is channel attention followed by spatial
attention; other networks reuse either half.
"""
import torch
from torch import nn

from dynamic_network_architectures.building_blocks.helper import get_matching_pool_op


class ChannelAttention(nn.Module):
    """sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))) * x, the MLP shared, C -> C/r -> C without bias."""

    def __init__(self, channels: int, reduction: int, conv_op=nn.Conv3d):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = get_matching_pool_op(conv_op, adaptive=True, pool_type="avg")(1)
        self.max_pool = get_matching_pool_op(conv_op, adaptive=True, pool_type="max")(1)
        self.mlp = nn.Sequential(conv_op(channels, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                 conv_op(hidden, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))


class SpatialAttention(nn.Module):
    """sigmoid(conv_k([mean_c(x), max_c(x)])) * x: one weight per pixel/voxel, conv without bias."""

    def __init__(self, kernel_size: int = 7, conv_op=nn.Conv3d):
        super().__init__()
        self.conv = conv_op(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))
