"""Map a conv op (nn.Conv2d / nn.Conv3d) to its companions, so one block class serves 2D and 3D."""
from torch import nn

_BY_DIM = {
    2: dict(conv=nn.Conv2d, transposed=nn.ConvTranspose2d, max_pool=nn.MaxPool2d,
            batch_norm=nn.BatchNorm2d, instance_norm=nn.InstanceNorm2d, dropout=nn.Dropout2d,
            adaptive_avg_pool=nn.AdaptiveAvgPool2d, adaptive_max_pool=nn.AdaptiveMaxPool2d,
            interpolation="bilinear"),
    3: dict(conv=nn.Conv3d, transposed=nn.ConvTranspose3d, max_pool=nn.MaxPool3d,
            batch_norm=nn.BatchNorm3d, instance_norm=nn.InstanceNorm3d, dropout=nn.Dropout3d,
            adaptive_avg_pool=nn.AdaptiveAvgPool3d, adaptive_max_pool=nn.AdaptiveMaxPool3d,
            interpolation="trilinear"),
}


def conv_dim(conv_op) -> int:
    """Spatial dimensionality of a conv op class (2 or 3)."""
    for dim, ops in _BY_DIM.items():
        if conv_op in (ops["conv"], ops["transposed"]):
            return dim
    raise ValueError(f"unsupported conv op {conv_op!r}: use nn.Conv2d or nn.Conv3d")


def companion(conv_op, kind: str):
    """The `kind` op matching conv_op's dimensionality, e.g. companion(nn.Conv3d, 'batch_norm')."""
    return _BY_DIM[conv_dim(conv_op)][kind]


def conv_op_for_dim(dim: int):
    if dim not in _BY_DIM:
        raise ValueError(f"unsupported dimensionality {dim}: 2 or 3")
    return _BY_DIM[dim]["conv"]
