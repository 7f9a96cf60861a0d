"""Paired window attention (PWA): multi-scale pooled windows, attention joint across streams.

VeloxSeg (Lu et al., ICLR 2026, Sec. 3, "glance-and-focus"; ../shared/specs/veloxseg.md): every
stream (one per input modality) projects q, k, v by 1x1 convs after a LayerNorm; its heads are
split over window scales. At scale i a window spans n * 2^i voxels per axis and is max-pooled to
n tokens per axis, so every scale costs the same; the tokens of all streams in a window are
concatenated, so attention is joint across modalities ("paired"). Scores get a relative-position
bias from a table of (2n-1)^dim entries per head shared by all scales and streams. Outputs are
upsampled (linear interpolation) back to the feature map and mixed by a 1x1 conv per stream.

Scales follow from the feature map at run time: scale i's pool factor on an axis is
min(2^i, ceil(size / n)), and scales grow until one window covers the whole map (the "glance").
With more scales than heads, the finest scales and the global one are kept. Axes whose pooled
size n does not divide are zero-padded and the padded keys masked, so any feature-map size works.
"""
from math import ceil
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_lightseg.architectures.blocks.layer_norm import LayerNormChannelsFirst
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim

from nnunet_lightseg.architectures.blocks.ops import interpolation_mode


def window_pool_factors(size: Sequence[int], tokens: int, max_scales: int) -> list[tuple[int, ...]]:
    """Per-axis max-pool factor of each window scale for a feature map of `size`, finest first."""
    factors, i = [], 0
    while True:
        step = tuple(min(2 ** i, max(1, ceil(s / tokens))) for s in size)
        factors.append(step)
        if all(ceil(s / f) <= tokens for s, f in zip(size, step)):
            break
        i += 1
    if len(factors) > max_scales:
        factors = factors[:max_scales - 1] + factors[-1:]
    return factors


def _partition(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, *S) with n | S -> (B, windows, C, n^dim)."""
    b, c, size = x.shape[0], x.shape[1], x.shape[2:]
    dim = len(size)
    x = x.reshape(b, c, *(i for s in size for i in (s // n, n)))
    order = [0] + [2 + 2 * a for a in range(dim)] + [1] + [3 + 2 * a for a in range(dim)]
    return x.permute(order).reshape(b, -1, c, n ** dim)


def _merge(x: torch.Tensor, n: int, size: Sequence[int]) -> torch.Tensor:
    """The inverse of `_partition`: (B, windows, C, n^dim) -> (B, C, *S)."""
    b, c, dim = x.shape[0], x.shape[2], len(size)
    x = x.reshape(b, *(s // n for s in size), c, *(n,) * dim)
    order = [0, dim + 1] + [i for a in range(dim) for i in (1 + a, dim + 2 + a)]
    return x.permute(order).reshape(b, c, *size)


class PairedWindowAttention(nn.Module):
    """x_m -> attention output for each of `num_streams` streams of `channels` channels (no residual).

    forward takes and returns a list of tensors (B, channels, *S), one per stream.
    """

    def __init__(self, channels: int, num_streams: int, head_dim: int, window_tokens: int = 3,
                 conv_op=nn.Conv3d):
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"PWA: {channels} channels do not split into heads of {head_dim}")
        self.dim, self.head_dim, self.tokens = convert_conv_op_to_dim(conv_op), head_dim, window_tokens
        self.num_heads = channels // head_dim
        self.interpolation = interpolation_mode(conv_op)
        self.norms = nn.ModuleList(LayerNormChannelsFirst(channels) for _ in range(num_streams))
        self.qkv = nn.ModuleList(conv_op(channels, 3 * channels, 1) for _ in range(num_streams))
        self.proj = nn.ModuleList(conv_op(channels, channels, 1) for _ in range(num_streams))
        span = 2 * window_tokens - 1
        self.bias_table = nn.Parameter(torch.zeros(span ** self.dim, self.num_heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        grid = torch.stack(torch.meshgrid(*[torch.arange(window_tokens)] * self.dim, indexing="ij")).flatten(1)
        relative = grid[:, :, None] - grid[:, None, :] + window_tokens - 1
        index = sum(relative[a] * span ** (self.dim - 1 - a) for a in range(self.dim))
        self.register_buffer("bias_index", index, persistent=False)

    def head_groups(self, num_scales: int) -> list[tuple[int, int]]:
        """Contiguous head ranges, one per scale, as even as possible."""
        bounds = [round(j * self.num_heads / num_scales) for j in range(num_scales + 1)]
        return list(zip(bounds[:-1], bounds[1:]))

    def forward(self, streams: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        size = tuple(streams[0].shape[2:])
        qkv = [conv(norm(x)) for x, norm, conv in zip(streams, self.norms, self.qkv)]
        factors = window_pool_factors(size, self.tokens, self.num_heads)
        per_scale = [self._scale(qkv, size, f, h0, h1) for f, (h0, h1) in zip(factors, self.head_groups(len(factors)))]
        return [proj(torch.cat([scale[m] for scale in per_scale], dim=1)) for m, proj in enumerate(self.proj)]

    def _scale(self, qkv, size, factor, h0, h1) -> list[torch.Tensor]:
        n, d, c = self.tokens, self.head_dim, self.num_heads * self.head_dim
        pooled = tuple(ceil(s / f) for s, f in zip(size, factor))
        padded = tuple(ceil(p / n) * n for p in pooled)
        pad = [v for p, q in zip(reversed(pooled), reversed(padded)) for v in (0, q - p)]
        channels = [slice(part * c + h0 * d, part * c + h1 * d) for part in range(3)]
        q, k, v = [], [], []
        for t in qkv:
            for out, sl in zip((q, k, v), channels):
                y = t[:, sl]
                if any(f > 1 for f in factor):
                    y = F.max_pool3d(y, factor, factor, ceil_mode=True) if self.dim == 3 else \
                        F.max_pool2d(y, factor, factor, ceil_mode=True)
                y = _partition(F.pad(y, pad), n)                              # (B, W, h*d, T)
                out.append(y.unflatten(2, (h1 - h0, d)).transpose(-1, -2))   # (B, W, h, T, d)
        streams = len(qkv)
        bias = self.bias_table[self.bias_index.repeat(streams, streams), h0:h1].permute(2, 0, 1)
        if padded != pooled:
            valid = F.pad(torch.ones((1, 1) + pooled, device=bias.device), pad)
            valid = _partition(valid, n).repeat(1, 1, 1, streams)            # (1, W, 1, M*T)
            bias = bias + torch.zeros_like(valid).masked_fill(valid == 0, float("-inf"))[:, :, :, None, :]
        # scores and softmax in float32: fp16 could overflow (autocast off here)
        with torch.autocast(device_type=q[0].device.type, enabled=False):
            out = F.scaled_dot_product_attention(torch.cat(q, 3).float(), torch.cat(k, 3).float(),
                                                 torch.cat(v, 3).float(), attn_mask=bias.float())
        out = out.to(qkv[0].dtype).chunk(streams, dim=3)
        results = []
        for y in out:
            y = _merge(y.transpose(-1, -2).flatten(2, 3), n, padded)
            y = y[(slice(None), slice(None)) + tuple(slice(0, p) for p in pooled)]
            if pooled != size:
                y = F.interpolate(y, size=size, mode=self.interpolation, align_corners=False)
            results.append(y)
        return results
