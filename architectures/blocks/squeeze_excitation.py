"""Squeeze-and-excitation channel gating (Hu et al., CVPR 2018), for 2D and 3D alike."""
from typing import Optional

import torch
from torch import nn

from dynamic_network_architectures.building_blocks.helper import get_matching_pool_op


class SqueezeExcitation(nn.Module):
    """x * sigmoid(W2 act(W1 GAP(x))): W1 is C -> hidden, W2 is hidden -> C, 1x1 convs with bias.

    hidden = `hidden_channels` if given, else max(1, C // reduction). `activation` is the hidden
    non-linearity, a module class (ReLU in the original paper).
    """

    def __init__(self, channels: int, reduction: int = 4, conv_op=nn.Conv3d, activation=nn.ReLU,
                 hidden_channels: Optional[int] = None):
        super().__init__()
        hidden = hidden_channels if hidden_channels is not None else max(1, channels // reduction)
        self.pool = get_matching_pool_op(conv_op, adaptive=True, pool_type="avg")(1)
        self.fc1 = conv_op(channels, hidden, 1)
        self.act = activation()
        self.fc2 = conv_op(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(self.pool(x)))))
