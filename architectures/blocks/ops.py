"""The one conv-op fact dynamic_network_architectures does not map: the interpolation mode.

Every other companion of a conv op (its batch norm, pooling, transposed conv, dimensionality) comes
from `dynamic_network_architectures.building_blocks.helper`, as nnU-Net's own networks get them.
"""
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim

_INTERPOLATION = {2: "bilinear", 3: "trilinear"}


def interpolation_mode(conv_op) -> str:
    """F.interpolate's linear mode for conv_op's dimensionality: 'bilinear' (2D) or 'trilinear' (3D)."""
    return _INTERPOLATION[convert_conv_op_to_dim(conv_op)]
