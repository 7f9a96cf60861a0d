"""UltraLightUNet (Rahman & Marculescu, ICLR 2025 submission), 2D and 3D in one class.

Components (paper Sec. 3): the Multi-Kernel Inverted Residual block (MKIR, Sec. 3.1) encodes; the
decoder refines with the Convolutional Multi-Focal Attention (CMFA, Sec. 3.2) and MKIR, which
together form MKIRA (Sec. 3.3), and merges skips through the Grouped Attention Gate (GAG,
Sec. 3.4). The paper's 3D network replaces every 2D operation by its 3D equivalent; here the conv
op chooses. Details the paper leaves open follow the authors' 2D code as the project's notes
describe it (../shared/specs/ultralightunet.md).
"""
from math import gcd
from typing import Sequence

import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import (convert_conv_op_to_dim, get_matching_batchnorm,
                                                                  get_matching_pool_op)
from torch import nn

from nnunet_lightseg.architectures.blocks.attention import ChannelAttention, SpatialAttention
from nnunet_lightseg.architectures.blocks.ops import interpolation_mode
from nnunet_lightseg.architectures.shapes import crop_to, cumulative_strides, pad_to_multiple

VARIANT_CHANNELS = {
    "T": (4, 8, 16, 24, 32),
    "S": (8, 16, 32, 48, 80),
    "base": (16, 32, 64, 96, 160),
    "M": (32, 64, 128, 192, 320),
    "L": (64, 128, 256, 384, 512),
}
CMFA_REDUCTIONS = (16, 16, 16, 8, 4)  # deepest decoder stage first (notes: "16, 16, 16, 8, 4")
BLOCK_CONV_INIT_STD = 0.02  # the authors' code: every block's convs N(0, 0.02^2) (UltraLightUNet.initialise)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle, used by MKIR after the multi-kernel depthwise convs (Sec. 3.1)."""
    if groups == 1:
        return x
    b, c = x.shape[:2]
    return x.reshape(b, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


class MultiKernelDepthwiseConv(nn.Module):
    """MKDC (Sec. 3.1, Eq. 2): parallel depthwise convs of kernels 1, 3, 5, each + BN + ReLU6, summed."""

    def __init__(self, channels: int, kernel_sizes: Sequence[int] = (1, 3, 5), conv_op=nn.Conv3d):
        super().__init__()
        norm = get_matching_batchnorm(conv_op)
        self.branches = nn.ModuleList(
            nn.Sequential(conv_op(channels, channels, k, padding=k // 2, groups=channels, bias=False),
                          norm(channels), nn.ReLU6(inplace=True))
            for k in kernel_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class MKIR(nn.Module):
    """Multi-Kernel Inverted Residual block (Sec. 3.1, Eq. 1).

    1x1 expansion (x2) + BN + ReLU6 -> MKDC -> channel shuffle -> 1x1 projection + BN, plus the
    input (through a 1x1 conv when the width changes). With one kernel and `shuffle=False` it is
    MobileNetV2's inverted residual block (IRB, Sandler et al. 2018), the paper's Table 6 baseline.
    """

    def __init__(self, in_channels: int, out_channels: int, expansion: int = 2,
                 kernel_sizes: Sequence[int] = (1, 3, 5), conv_op=nn.Conv3d, shuffle: bool = True):
        super().__init__()
        norm = get_matching_batchnorm(conv_op)
        hidden = in_channels * expansion
        self.expand = nn.Sequential(conv_op(in_channels, hidden, 1, bias=False), norm(hidden), nn.ReLU6(inplace=True))
        self.mkdc = MultiKernelDepthwiseConv(hidden, kernel_sizes, conv_op)
        self.shuffle_groups = gcd(hidden, out_channels) if shuffle else 1  # 1: no shuffle
        self.project = nn.Sequential(conv_op(hidden, out_channels, 1, bias=False), norm(out_channels))
        self.shortcut = nn.Identity() if in_channels == out_channels else conv_op(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(self.mkdc(self.expand(x)), self.shuffle_groups)
        return self.project(out) + self.shortcut(x)


class CMFA(nn.Module):
    """Convolutional Multi-Focal Attention (Sec. 3.2, Eq. 3): channel then spatial attention.

    The spatial attention module is passed in because the authors' code shares one across all
    decoder stages.
    """

    def __init__(self, channels: int, reduction: int, spatial_attention: SpatialAttention, conv_op=nn.Conv3d):
        super().__init__()
        self.channel_attention = ChannelAttention(channels, reduction, conv_op)
        self.spatial_attention = spatial_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_attention(self.channel_attention(x))


class GroupedAttentionGate(nn.Module):
    """GAG (Sec. 3.4, Eq. 5): gate the skip x by psi(ReLU(W_g g + W_x x)).

    W_g and W_x are 3-kernel grouped convs C -> C/2 (groups C/2) + BN; psi is a 1x1 conv
    C/2 -> 1 + BN + sigmoid.
    """

    def __init__(self, channels: int, kernel_size: int = 3, conv_op=nn.Conv3d):
        super().__init__()
        norm = get_matching_batchnorm(conv_op)
        inner = max(1, channels // 2)

        def grouped():
            return nn.Sequential(conv_op(channels, inner, kernel_size, padding=kernel_size // 2,
                                         groups=inner if channels % inner == 0 else 1), norm(inner))

        self.w_g, self.w_x = grouped(), grouped()
        self.psi = nn.Sequential(conv_op(inner, 1, 1), norm(1), nn.Sigmoid())

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.psi(F.relu(self.w_g(g) + self.w_x(x)))


class AttentionGate(nn.Module):
    """Attention U-Net's additive gate (Oktay et al. 2018), the paper's Table 8 baseline for GAG:
    x * psi(ReLU(W_g g + W_x x)) with W_g, W_x 1x1 convs C -> C/2 + BN and psi as in GAG."""

    def __init__(self, channels: int, conv_op=nn.Conv3d):
        super().__init__()
        norm = get_matching_batchnorm(conv_op)
        inner = max(1, channels // 2)
        self.w_g = nn.Sequential(conv_op(channels, inner, 1), norm(inner))
        self.w_x = nn.Sequential(conv_op(channels, inner, 1), norm(inner))
        self.psi = nn.Sequential(conv_op(inner, 1, 1), norm(1), nn.Sigmoid())

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.psi(F.relu(self.w_g(g) + self.w_x(x)))


GATES = {"gag": GroupedAttentionGate, "ag": AttentionGate}
BLOCKS = ("mkir", "irb")  # MKIR (Sec. 3.1) or MobileNetV2's IRB (Table 6: one 3-kernel, no shuffle)


def _block(in_channels: int, out_channels: int, block: str, kernel_sizes: Sequence[int], conv_op) -> MKIR:
    if block == "irb":
        return MKIR(in_channels, out_channels, kernel_sizes=(3,), conv_op=conv_op, shuffle=False)
    return MKIR(in_channels, out_channels, kernel_sizes=kernel_sizes, conv_op=conv_op)


class DecoderStage(nn.Module):
    """One decoder stage (Sec. 3.5): [CMFA] -> MKIR -> upsample -> ReLU, then + [GAG or AG](skip)."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int, spatial_attention, use_cmfa: bool,
                 gate: str, has_skip: bool, conv_op, block: str = "mkir", kernel_sizes: Sequence[int] = (1, 3, 5)):
        super().__init__()
        self.cmfa = CMFA(in_channels, reduction, spatial_attention, conv_op) if use_cmfa else nn.Identity()
        self.mkir = _block(in_channels, out_channels, block, kernel_sizes, conv_op)
        self.gag = GATES[gate](out_channels, conv_op=conv_op) if (gate and has_skip) else None
        self.interpolation = interpolation_mode(conv_op)

    def forward(self, x: torch.Tensor, size: Sequence[int], skip: torch.Tensor = None) -> torch.Tensor:
        x = self.mkir(self.cmfa(x))
        if tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode=self.interpolation, align_corners=False)
        x = F.relu(x, inplace=True)  # x is the interpolation's or the MKIR sum's own output
        if skip is None:
            return x
        return x + (self.gag(x, skip) if self.gag is not None else skip)


class UltraLightUNet(nn.Module):
    """UltraLightUNet: five MKIR encoder stages, five MKIRA decoder stages with GAG skips (Fig. 2).

    Args:
        in_channels, num_classes: input channels and output logits.
        channels: C1..C5 (see VARIANT_CHANNELS for the paper's T/S/base/M/L).
        strides: per-axis downsampling of each of the five encoder stages (the paper: 2 everywhere).
        conv_op: nn.Conv2d or nn.Conv3d.
        use_mkira: CMFA in the decoder (the paper's MKIRA); False leaves MKIR alone.
        use_gag: gate skips (GAG unless `gate` says otherwise); False adds them as they are.
        kernel_sizes: the depthwise kernels of every MKDC (Sec. 3.1; Table 5 varies them, default 1, 3, 5).
        block: "mkir", or "irb" for MobileNetV2's inverted residual (Tables 4 and 6: one 3-kernel, no
            shuffle; `kernel_sizes` is then unused).
        encoder_mkira: MKIRA instead of MKIR in the encoder (Table 7).
        gate: "gag", or "ag" for Attention U-Net's gate (Table 8).
        deep_supervision: also return logits at 1/2, 1/4 and 1/8 of the decoder (heads exist either way).
    """

    num_deep_supervision_heads = 3

    def __init__(self, in_channels: int, num_classes: int, channels: Sequence[int] = VARIANT_CHANNELS["base"],
                 strides: Sequence[Sequence[int]] = ((2, 2, 2),) * 5, conv_op=nn.Conv3d, use_mkira: bool = True,
                 use_gag: bool = True, kernel_sizes: Sequence[int] = (1, 3, 5), block: str = "mkir",
                 encoder_mkira: bool = False, gate: str = "gag", deep_supervision: bool = False):
        super().__init__()
        dim = convert_conv_op_to_dim(conv_op)
        if len(channels) != 5 or len(strides) != 5:
            raise ValueError(f"UltraLightUNet has five stages: got {len(channels)} widths and {len(strides)} strides")
        if any(len(s) != dim for s in strides):
            raise ValueError(f"strides {strides} do not match {dim}D conv op {conv_op.__name__}")
        if block not in BLOCKS or gate not in GATES:
            raise ValueError(f"block {block!r} or gate {gate!r}: use one of {BLOCKS} and one of {tuple(GATES)}")
        self.strides = [tuple(int(v) for v in s) for s in strides]
        self.deep_supervision = deep_supervision
        pool = get_matching_pool_op(conv_op, pool_type="max")

        spatial_attention = SpatialAttention(7, conv_op) if (use_mkira or encoder_mkira) else None
        widths = [in_channels, *channels]
        self.encoder = nn.ModuleList(_block(widths[i], widths[i + 1], block, kernel_sizes, conv_op) for i in range(5))
        # Table 7's MKIRA in the encoder, MKIR(CMFA(x)) (Eq. 5); the paper gives no reductions for it:
        # the decoder's, shallowest stage first. Kept apart so that the default network's keys stay as they are.
        self.encoder_cmfa = nn.ModuleList(CMFA(widths[i], CMFA_REDUCTIONS[4 - i], spatial_attention, conv_op)
                                          for i in range(5)) if encoder_mkira else None
        self.pools = nn.ModuleList(pool(s, s) if any(v > 1 for v in s) else nn.Identity() for s in self.strides)

        decoder_widths = [channels[4], channels[3], channels[2], channels[1], channels[0], channels[0]]
        self.decoder = nn.ModuleList(
            DecoderStage(decoder_widths[i], decoder_widths[i + 1], CMFA_REDUCTIONS[i], spatial_attention,
                         use_mkira, gate if use_gag else "", has_skip=i < 4, conv_op=conv_op, block=block,
                         kernel_sizes=kernel_sizes)
            for i in range(5))
        self.head = conv_op(channels[0], num_classes, 1)
        # Heads on the decoder outputs at 1/2, 1/4, 1/8 (the authors' code builds these too).
        self.ds_heads = nn.ModuleList(conv_op(decoder_widths[5 - i], num_classes, 1)
                                      for i in range(1, self.num_deep_supervision_heads + 1))
        self.initialise()

    def initialise(self) -> None:
        """As the authors' 2D code (MK-UNet) initialises: every conv of the blocks (MKIR and its
        depthwise convs, CMFA's channel and spatial attention, GAG) from N(0, BLOCK_CONV_INIT_STD^2)
        with zero bias, batch norms at weight 1 and bias 0; the 1x1 heads keep PyTorch's defaults.
        The paper states none; its 3D network is the 2D one with 3D operations, so the 3D convs
        follow the same rule. With batch norm after most of these convs, the small weights give SGD
        larger relative steps than PyTorch's defaults do (docs/training.md, issue 11)."""
        for block in (*self.encoder, *(self.encoder_cmfa or ()), *self.decoder):
            for module in block.modules():
                if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                    nn.init.normal_(module.weight, std=BLOCK_CONV_INIT_STD)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    @property
    def output_strides(self) -> list[tuple[int, ...]]:
        return cumulative_strides(self.strides)[:1 + self.num_deep_supervision_heads]

    def forward(self, x: torch.Tensor):
        x, size = pad_to_multiple(x, cumulative_strides(self.strides)[-1])
        sizes, skips = [tuple(x.shape[2:])], []
        for i, (block, pool) in enumerate(zip(self.encoder, self.pools)):
            x = pool(block(self.encoder_cmfa[i](x) if self.encoder_cmfa is not None else x))
            skips.append(x)
            sizes.append(tuple(x.shape[2:]))
        # skips: outputs at 1/2 .. 1/32; the deepest is the bottleneck, not a skip.
        decoded = []
        for i, stage in enumerate(self.decoder):
            level = 4 - i  # the stage upsamples to the resolution of sizes[level]
            x = stage(x, sizes[level], skips[level - 1] if level > 0 else None)
            decoded.append(x)
        logits = crop_to(self.head(x), size)
        if not self.deep_supervision:
            return logits
        outputs = [logits]
        for i, head in enumerate(self.ds_heads, start=1):
            stride = self.output_strides[i]
            target = tuple(int(round(s / st)) for s, st in zip(size, stride))
            outputs.append(crop_to(head(decoded[4 - i]), target))
        return outputs
