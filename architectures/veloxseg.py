"""VeloxSeg (Lu et al., "VeloxSeg: Johnson-Lindenstrauss Lemma Guided Network for Efficient 3D
Medical Segmentation", ICLR 2026, arXiv 2509.22307): the inference network.

A dual-stream encoder (abstract; ../shared/specs/veloxseg.md): a convolution stream over all
modalities concatenated, built from Johnson-Lindenstrauss-guided convolution blocks (JLC), and one
transformer stream per modality with paired window attention (PWA) joint across modalities; a
modal mixer adds the transformer features to the convolution stream at every level. A JLC decoder
with a pixel-shuffle head segments. Spatially decoupled knowledge transfer (SDKT) is a training
objective: its reconstruction decoders live in `veloxseg_sdkt.py`, outside this module, so the
inference network holds inference parameters only.

Four levels. The first downsamples by `strides[0]` (the paper: 4, a 7^3 conv), the others by
`strides[1:]` (the paper: 2); any per-axis stride works, 1 included.
"""
import math
from typing import NamedTuple, Sequence

import torch
from torch import nn

from nnunet_lightseg.architectures.blocks.layer_norm import LayerNormChannelsFirst
from nnunet_lightseg.architectures.blocks.pixel_shuffle import pixel_shuffle, pixel_unshuffle
from nnunet_lightseg.architectures.blocks.window_attention import PairedWindowAttention
from nnunet_lightseg.architectures.shapes import crop_to, cumulative_strides, pad_to_multiple, scaled_size

WIDTHS = (16, 32, 64, 128)
GROUP_WIDTHS = (4, 8, 8, 16)
EXPANSIONS = (3, 3, 2, 2)
HEAD_DIMS = (4, 8, 8, 16)


def minimum_input_size(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The smallest input VeloxSeg with these level strides takes: its deepest level must hold 2 voxels
    per axis (instance norm of a single voxel is undefined)."""
    return tuple(t + 1 for t in cumulative_strides(strides)[-1])


def instance_norm(channels: int) -> nn.Module:
    return nn.InstanceNorm3d(channels, affine=False)


class JLC(nn.Module):
    """Johnson-Lindenstrauss-guided convolution block.

    Parallel grouped convs (kernels 1, 3, 5; `group_width` channels per group, i.e. random-projection
    -like low-dimensional mixing), each + InstanceNorm + GELU, summed onto the input; then a channel
    MLP with residual: IN -> 1x1 (C -> eC) -> GELU -> 1x1 (eC -> C) -> dropout.
    """

    def __init__(self, channels: int, group_width: int, expansion: int,
                 kernel_sizes: Sequence[int] = (1, 3, 5), dropout: float = 0.1):
        super().__init__()
        if channels % group_width:
            raise ValueError(f"JLC: {channels} channels do not split into groups of {group_width}")
        groups = channels // group_width
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv3d(channels, channels, k, padding=k // 2, groups=groups, bias=False),
                          instance_norm(channels), nn.GELU())
            for k in kernel_sizes)
        hidden = channels * expansion
        self.mlp = nn.Sequential(instance_norm(channels), nn.Conv3d(channels, hidden, 1), nn.GELU(),
                                 nn.Conv3d(hidden, channels, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for branch in self.branches:
            out = out + branch(x)
        return out + self.mlp(out)


def downsample(in_channels: int, out_channels: int, stride: Sequence[int]) -> nn.Sequential:
    """Conv with kernel 2p-1, stride p, padding p-1 per axis, then InstanceNorm (p = 4: 7^3, stride 4)."""
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, [2 * p - 1 for p in stride], stride=tuple(stride),
                                   padding=[p - 1 for p in stride], bias=False),
                         instance_norm(out_channels))


def upsample(in_channels: int, out_channels: int, stride: Sequence[int]) -> nn.Sequential:
    """Transposed conv (kernel = stride) + InstanceNorm: the decoder's upsampling."""
    return nn.Sequential(nn.ConvTranspose3d(in_channels, out_channels, tuple(stride), stride=tuple(stride),
                                            bias=False),
                         instance_norm(out_channels))


class PatchMerge(nn.Module):
    """Transformer stream downsampling: space-to-depth by `stride`, LayerNorm, 1x1 conv (prod(s)*C -> C')."""

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int]):
        super().__init__()
        self.stride = tuple(int(s) for s in stride)
        merged = in_channels * math.prod(self.stride)
        self.norm = LayerNormChannelsFirst(merged)
        self.proj = nn.Conv3d(merged, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(pixel_unshuffle(x, self.stride)))


class PWALayer(nn.Module):
    """x + PWA(LN(x)) jointly over the modality streams, then x + FFN(LN(x)) per stream.

    The residual is added once (the authors' code adds it twice, giving 2x + attention; we do not).
    """

    def __init__(self, channels: int, num_streams: int, head_dim: int, window_tokens: int, ffn_expansion: int):
        super().__init__()
        self.attention = PairedWindowAttention(channels, num_streams, head_dim, window_tokens)
        hidden = channels * ffn_expansion
        self.ffn = nn.ModuleList(
            nn.Sequential(LayerNormChannelsFirst(channels), nn.Conv3d(channels, hidden, 1), nn.GELU(),
                          nn.Conv3d(hidden, channels, 1))
            for _ in range(num_streams))

    def forward(self, streams: list[torch.Tensor]) -> list[torch.Tensor]:
        streams = [x + a for x, a in zip(streams, self.attention(streams))]
        return [x + ffn(x) for x, ffn in zip(streams, self.ffn)]


class VeloxFeatures(NamedTuple):
    """What SDKT needs from a forward pass (each at its level's resolution of the padded input)."""

    encoder: list[torch.Tensor]        # fused convolution-stream features, levels 1..4
    streams: list[list[torch.Tensor]]  # per modality, transformer features at levels 1..4
    decoder: torch.Tensor              # the segmentation decoder's finest features (up1)


class VeloxSeg(nn.Module):
    """VeloxSeg for 3D inputs of `in_channels` modalities (one transformer stream each).

    strides: four per-axis strides, one per level (paper: (4,4,4) then (2,2,2) three times).
    The transformer FFNs expand by the level's expansion, as the JLC MLPs (the notes give one
    expansion per level).
    Outputs (deep supervision on): full resolution from the pixel-shuffle head, then 1x1 heads on
    the decoder at levels 2 and 3 and on the deepest encoder level; the heads always exist.
    With `return_features` set (SDKT training), forward returns (outputs, VeloxFeatures).
    """

    def __init__(self, in_channels: int, num_classes: int, strides: Sequence[Sequence[int]],
                 deep_supervision: bool = False, widths: Sequence[int] = WIDTHS,
                 group_widths: Sequence[int] = GROUP_WIDTHS, expansions: Sequence[int] = EXPANSIONS,
                 head_dims: Sequence[int] = HEAD_DIMS, kernel_sizes: Sequence[int] = (1, 3, 5),
                 window_tokens: int = 3, ffn_expansions: Sequence[int] = EXPANSIONS, dropout: float = 0.1):
        super().__init__()
        strides = [tuple(int(s) for s in step) for step in strides]
        if len(strides) != 4 or any(len(step) != 3 for step in strides):
            raise ValueError(f"VeloxSeg is a 3D network with four levels: it needs four 3D strides, got {strides}")
        self.in_channels, self.num_classes, self.strides = in_channels, num_classes, strides
        self.widths, self.group_widths, self.expansions = tuple(widths), tuple(group_widths), tuple(expansions)
        self.kernel_sizes, self.dropout = tuple(kernel_sizes), dropout
        self.deep_supervision = deep_supervision
        self.return_features = False
        cumulative = cumulative_strides(strides)
        self.total_stride = cumulative[-1]
        self.minimum_input_size = minimum_input_size(strides)
        self.output_strides = [cumulative[0], cumulative[2], cumulative[3], cumulative[4]]
        w = self.widths

        # convolution stream (all modalities concatenated)
        self.down = nn.ModuleList(downsample(c_in, c, s) for c_in, c, s in zip((in_channels,) + w[:-1], w, strides))
        self.encoder = nn.ModuleList(JLC(c, g, e, kernel_sizes, dropout)
                                     for c, g, e in zip(w, group_widths, expansions))
        # transformer streams, one per modality; the PWA layers hold all streams of a level
        self.embed = nn.ModuleList(nn.Sequential(nn.Conv3d(1, w[0], strides[0], stride=strides[0]), nn.Dropout(dropout))
                                   for _ in range(in_channels))
        self.merge = nn.ModuleList(nn.ModuleList(PatchMerge(w[i], w[i + 1], strides[i + 1]) for _ in range(in_channels))
                                   for i in range(3))
        self.pwa = nn.ModuleList(PWALayer(c, in_channels, d, window_tokens, e)
                                 for c, d, e in zip(w, head_dims, ffn_expansions))
        # modal mixer: all streams' features -> the convolution stream's width
        self.mixer = nn.ModuleList(nn.Sequential(nn.Conv3d(in_channels * c, c, 1, bias=False), instance_norm(c))
                                   for c in w)
        # decoder
        self.up = nn.ModuleList(upsample(w[i + 1], w[i], strides[i + 1]) for i in range(3))
        self.decoder = nn.ModuleList(JLC(w[i], group_widths[i], expansions[i], kernel_sizes, dropout) for i in range(3))
        self.head = nn.Conv3d(w[0], num_classes * math.prod(strides[0]), 3, padding=1)
        self.ds_heads = nn.ModuleList(nn.Conv3d(c, num_classes, 1) for c in (w[1], w[2], w[3]))

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """The dual-stream encoder: fused features and per-modality transformer features per level."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f"VeloxSeg was built for {self.in_channels} modalities (input channels) "
                             f"but got an input with {x.shape[1]}; build it with in_channels={x.shape[1]}")
        streams = [embed(x[:, m:m + 1]) for m, embed in enumerate(self.embed)]
        fused, per_level = x, []
        encoder = []
        for level in range(4):
            if level:
                streams = [merge(t) for t, merge in zip(streams, self.merge[level - 1])]
            streams = self.pwa[level](streams)
            per_level.append(streams)
            fused = self.down[level](fused)
            fused = self.encoder[level](fused + self.mixer[level](torch.cat(streams, dim=1)))
            encoder.append(fused)
        return encoder, [list(modality) for modality in zip(*per_level)]

    def forward(self, x: torch.Tensor):
        if any(s < m for s, m in zip(x.shape[2:], self.minimum_input_size)):
            raise ValueError(f"VeloxSeg with strides {self.strides} needs inputs of at least {self.minimum_input_size} "
                             f"voxels (its deepest level, 1/{self.total_stride}, must hold 2 voxels per axis), got "
                             f"{tuple(x.shape[2:])}: use a larger patch or fewer downsampling steps")
        x, size = pad_to_multiple(x, self.total_stride)
        encoder, streams = self.encode(x)
        enc1, enc2, enc3, enc4 = encoder
        up3 = self.decoder[2](enc3 + self.up[2](enc4))
        up2 = self.decoder[1](enc2 + self.up[1](up3))
        up1 = self.decoder[0](enc1 + self.up[0](up2))
        logits = crop_to(pixel_shuffle(self.head(up1), self.strides[0]), size)
        if self.deep_supervision:
            low = [head(f) for head, f in zip(self.ds_heads, (up2, up3, enc4))]
            logits = [logits] + [crop_to(y, scaled_size(size, s)) for y, s in zip(low, self.output_strides[1:])]
        if self.return_features:
            return logits, VeloxFeatures(encoder, streams, up1)
        return logits
