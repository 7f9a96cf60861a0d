"""Depthwise-separable convolution (MobileNet, Howard et al. 2017), for 2D and 3D alike."""
from torch import nn


class DepthwiseSeparableConv(nn.Sequential):
    """A k^d depthwise conv (one filter per input channel) followed by a 1x1 pointwise conv.

    Replaces a full k^d conv: in*k^d + in*out weights instead of in*out*k^d. Submodules
    `depthwise` and `pointwise`; both without bias by default (a norm follows in every user).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride=1,
                 conv_op=nn.Conv3d, bias: bool = False):
        super().__init__()
        self.depthwise = conv_op(in_channels, in_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                                 groups=in_channels, bias=bias)
        self.pointwise = conv_op(in_channels, out_channels, 1, bias=bias)
