"""DALight-3D (Mishra, Mishra & Singh, arXiv 2605.04518), a lightweight 3D U-Net for multi-modal MRI.

The paper's four components (Methodology, items 1-4): depthwise-separable 3D convolutions in the
encoder, identifier-conditioned normalisation (ICN), cross-slice attention (CSA) and the adaptive
skip-fusion block (SSFB). The paper's text is a summary; the widths, depth and the details of each
block follow the authors' paper settings as the project's notes describe them
(../shared/specs/dalight3d.md). docs/architectures/dalight3d.md lists what we chose where
neither says.

Identifiers (ICN): one identifier per input channel, taken from a fixed vocabulary of modality
names (`MODALITY_VOCABULARY`) so that the same modality gets the same identifier in every dataset
and every process; a channel whose name is not in the vocabulary gets the "other" slot of its
position. See `identifiers_for_channels`.
"""
import itertools
import re
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_lightseg.architectures.blocks.separable import DepthwiseSeparableConv
from nnunet_lightseg.architectures.blocks.squeeze_excitation import SqueezeExcitation
from nnunet_lightseg.architectures.initialisation import convs_before_group_norm, he_with_small_normalised_convs
from nnunet_lightseg.architectures.shapes import crop_to, cumulative_strides, pad_to_multiple, scaled_size

PAPER_WIDTHS = (24, 48, 96, 432)  # stages 0-2 and the bottleneck (notes: base width 24)
GROUPS = 8  # GroupNorm(8) everywhere (notes)

# Append-only: an identifier is a row of every ICN table, so reordering would silently change
# what trained checkpoints mean.
MODALITY_VOCABULARY = ("CT", "PET", "MRI", "T1", "T1CE", "T2", "FLAIR", "PD", "DWI", "ADC")
_SYNONYMS = {
    "CT": "CT",
    "PET": "PET", "PT": "PET",
    "MRI": "MRI", "MR": "MRI",
    "T1": "T1", "T1W": "T1", "T1N": "T1", "T1NATIVE": "T1", "T1PRE": "T1",
    "T1CE": "T1CE", "T1C": "T1CE", "T1GD": "T1CE", "T1WGD": "T1CE", "T1WCE": "T1CE", "T1POST": "T1CE",
    "T2": "T2", "T2W": "T2",
    "FLAIR": "FLAIR", "T2FLAIR": "FLAIR", "T2F": "FLAIR",
    "PD": "PD", "PDW": "PD",
    "DWI": "DWI", "DW": "DWI", "HBV": "DWI",
    "ADC": "ADC",
}


def num_identifiers_for(in_channels: int) -> int:
    """Rows of the ICN tables: the vocabulary, then one "other" slot per input channel position."""
    return len(MODALITY_VOCABULARY) + in_channels


def identifiers_for_channels(channel_names: Union[Mapping[str, str], Sequence[Optional[str]]]) -> list[int]:
    """One identifier per input channel, in channel order, from the channels' names.

    `channel_names` is dataset.json's `channel_names` ({"0": "FLAIR", "1": "T1w", ...}) or a list
    of names. A name is normalised (upper case, letters and digits only, so "T1w", "t1-w" and "T1W"
    agree) and looked up among the synonyms of `MODALITY_VOCABULARY`; a name not found (or None)
    gives channel k the slot len(MODALITY_VOCABULARY) + k. Pure string work: the result is the
    same in every process, unlike Python's salted `hash`.
    """
    if isinstance(channel_names, Mapping):
        channel_names = [channel_names[key] for key in sorted(channel_names, key=int)]
    identifiers = []
    for index, name in enumerate(channel_names):
        canonical = _SYNONYMS.get(re.sub(r"[^A-Z0-9]", "", str(name).upper())) if name is not None else None
        identifiers.append(MODALITY_VOCABULARY.index(canonical) if canonical else len(MODALITY_VOCABULARY) + index)
    return identifiers


class IdentifierConditionedNorm(nn.Module):
    """ICN (Methodology, item 2): GroupNorm without affine, then a scale and shift chosen by identifier.

    (gamma, beta) = mean over the given identifiers of the rows of a learned table; the output is
    GN(x) * (1 + gamma) + beta. The table starts at zero, so an untrained ICN is a plain GroupNorm.
    """

    def __init__(self, channels: int, num_identifiers: int, groups: int = GROUPS):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.table = nn.Embedding(num_identifiers, 2 * channels)
        nn.init.zeros_(self.table.weight)

    def forward(self, x: torch.Tensor, identifiers: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.table(identifiers).mean(dim=0).chunk(2)
        # GN(x) * (1 + gamma) + beta, as one group norm whose affine is (1 + gamma, beta): one pass
        # over x instead of three
        return F.group_norm(x, self.norm.num_groups, 1 + gamma, beta, self.norm.eps)


def _normalise(norm: nn.Module, x: torch.Tensor, identifiers: torch.Tensor) -> torch.Tensor:
    return norm(x, identifiers) if isinstance(norm, IdentifierConditionedNorm) else norm(x)


class CrossSliceAttention(nn.Module):
    """CSA (Methodology, item 3): attention among the slices of the first spatial axis.

    Each slice is summarised by its mean over the two in-plane axes; 1D (kernel 1) projections give
    queries and keys (C -> max(C/4, 8)) and values (C -> C); a slices x slices softmax (scaled by
    1/sqrt(d)) mixes the values, which are broadcast over the slice's plane and added to x.
    """

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 4, 8)
        self.query = nn.Conv1d(channels, inner, 1)
        self.key = nn.Conv1d(channels, inner, 1)
        self.value = nn.Conv1d(channels, channels, 1)
        self.scale = inner ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slices = x.mean(dim=(3, 4))  # (B, C, D)
        q, k, v = self.query(slices), self.key(slices), self.value(slices)
        attention = torch.softmax(q.transpose(1, 2) @ k * self.scale, dim=-1)  # (B, D, D): row i attends to j
        return x + (v @ attention.transpose(1, 2))[..., None, None]


class SkipFusion(nn.Module):
    """SSFB's adaptive skip weighting (Methodology, item 4), before the decoder's 2C -> C conv.

    Two views of the encoder skip e, given the upsampled decoder features d: a rank-r linear
    attention (queries from d, keys from e, values e; softmax over the rank for queries and over
    positions for keys, so the cost is linear in the voxels) and a channel gate
    sigmoid(MLP([GAP(d), GAP(e)])) * e; mixed as s * attention + (1 - s) * gated, s = sigmoid(alpha)
    with alpha learned (initialised 0.5).
    """

    def __init__(self, channels: int, rank: int = 8):
        super().__init__()
        hidden = max(channels // 4, 8)
        self.query = nn.Conv3d(channels, rank, 1)
        self.key = nn.Conv3d(channels, rank, 1)
        self.gate = nn.Sequential(nn.Linear(2 * channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        self.alpha = nn.Parameter(torch.tensor(0.5))

    def forward(self, decoder: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        q = torch.softmax(self.query(decoder).flatten(2), dim=1)  # (B, r, N)
        k = torch.softmax(self.key(skip).flatten(2), dim=2)  # (B, r, N)
        v = skip.flatten(2)  # (B, C, N)
        context = k @ v.transpose(1, 2)  # (B, r, C) = (v k^T)^T: 8x faster than v @ k^T on channels-last v
        attended = (context.transpose(1, 2) @ q).view_as(skip)  # (B, C, r) @ (B, r, N)
        pooled = torch.cat([decoder.mean(dim=(2, 3, 4)), skip.mean(dim=(2, 3, 4))], dim=1)
        gated = skip * torch.sigmoid(self.gate(pooled))[..., None, None, None]
        mix = torch.sigmoid(self.alpha)
        return mix * attended + (1 - mix) * gated


def _conv3(in_channels: int, out_channels: int, separable: bool) -> nn.Module:
    if separable:
        return DepthwiseSeparableConv(in_channels, out_channels, 3, conv_op=nn.Conv3d)
    return nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False)


def _norm(channels: int, num_identifiers: Optional[int]) -> nn.Module:
    if num_identifiers is None:
        return nn.GroupNorm(GROUPS, channels)
    return IdentifierConditionedNorm(channels, num_identifiers)


class DALightBlock(nn.Module):
    """The encoder/decoder block (Methodology, item 1, and the notes).

    conv -> norm -> GELU -> conv -> norm -> SE (r = 4, GELU) -> [CSA] -> + shortcut -> GELU; the
    convs are 3^3 (full or depthwise-separable), the norms ICN (or GroupNorm when
    `num_identifiers` is None), the shortcut a 1x1 conv + GroupNorm where the width changes.
    """

    def __init__(self, in_channels: int, out_channels: int, separable: bool, num_identifiers: Optional[int],
                 use_csa: bool = False):
        super().__init__()
        self.conv1 = _conv3(in_channels, out_channels, separable)
        self.norm1 = _norm(out_channels, num_identifiers)
        self.conv2 = _conv3(out_channels, out_channels, separable)
        self.norm2 = _norm(out_channels, num_identifiers)
        self.se = SqueezeExcitation(out_channels, 4, nn.Conv3d, nn.GELU)
        self.csa = CrossSliceAttention(out_channels) if use_csa else None
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 1, bias=False), nn.GroupNorm(GROUPS, out_channels))

    def forward(self, x: torch.Tensor, identifiers: torch.Tensor) -> torch.Tensor:
        out = F.gelu(_normalise(self.norm1, self.conv1(x), identifiers))
        out = self.se(_normalise(self.norm2, self.conv2(out), identifiers))
        if self.csa is not None:
            out = self.csa(out)
        return F.gelu(out + self.shortcut(x))


class DecoderLevel(nn.Module):
    """Upsample (transposed conv, kernel = stride = the encoder's step), merge the skip, refine.

    Merge: [SSFB skip weighting] -> concat -> 3^3 conv (2C -> C) + GroupNorm + GELU; refine: a
    block without CSA. The deepest level merges by plain concatenation (notes).
    """

    def __init__(self, in_channels: int, channels: int, step: Sequence[int], separable: bool,
                 num_identifiers: Optional[int], use_ssfb: bool):
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, channels, tuple(step), stride=tuple(step))
        self.fusion = SkipFusion(channels) if use_ssfb else None
        self.merge = nn.Sequential(nn.Conv3d(2 * channels, channels, 3, padding=1, bias=False),
                                   nn.GroupNorm(GROUPS, channels), nn.GELU())
        self.block = DALightBlock(channels, channels, separable, num_identifiers)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, identifiers: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if self.fusion is not None:
            skip = self.fusion(x, skip)
        return self.block(self.merge(torch.cat([x, skip], dim=1)), identifiers)


class DALight3D(nn.Module):
    """DALight-3D: a four-stage 3D U-Net (three downsampling steps) of DALight blocks.

    Args:
        in_channels, num_classes: input channels (modalities) and output logits.
        strides: per-axis step of each of the three downsampling convs (the paper: 2 everywhere);
            a step of 1 keeps the resolution (plans with fewer steps).
        deep_supervision: also return logits of the two coarser decoder levels (their 1x1 heads
            exist either way).
        widths: stages 0-2 and the bottleneck (the paper: 24, 48, 96, 432).
        channel_identifiers: the ICN identifier of each input channel (see
            `identifiers_for_channels`); default: every channel in the "other" slot of its position.
            Kept as a buffer, so checkpoints carry it; `set_channel_identifiers` changes it.
        num_identifiers: rows of the ICN tables; default `num_identifiers_for(in_channels)`.
        use_separable_conv: depthwise-separable convs in stages 1-3 and the decoder (else full 3^3).
        use_icn: ICN in the blocks (else GroupNorm with a learned affine).
        use_csa: CSA in the deepest two encoder stages.
        use_ssfb: SSFB skip weighting at the two finer decoder levels (else plain concatenation).
    """

    def __init__(self, in_channels: int, num_classes: int, strides: Sequence[Sequence[int]] = ((2, 2, 2),) * 3,
                 deep_supervision: bool = False, widths: Sequence[int] = PAPER_WIDTHS,
                 channel_identifiers: Optional[Sequence[int]] = None, num_identifiers: Optional[int] = None,
                 use_separable_conv: bool = True, use_icn: bool = True, use_csa: bool = True,
                 use_ssfb: bool = True):
        super().__init__()
        if len(widths) != 4 or len(strides) != 3:
            raise ValueError(f"DALight3D has four stages joined by three downsampling steps: got {len(widths)} "
                             f"widths and {len(strides)} strides")
        if any(len(s) != 3 for s in strides):
            raise ValueError(f"DALight3D is 3D only: every stride needs three axes, got {list(strides)}")
        if any(w % GROUPS for w in widths):
            raise ValueError(f"widths {tuple(widths)} must be multiples of {GROUPS} (GroupNorm groups)")
        self.strides = [tuple(int(v) for v in s) for s in strides]
        self.deep_supervision = deep_supervision
        self.in_channels = in_channels
        self.num_identifiers = num_identifiers_for(in_channels) if num_identifiers is None else num_identifiers
        self.register_buffer("channel_identifiers", torch.zeros(in_channels, dtype=torch.long))
        self.set_channel_identifiers(channel_identifiers if channel_identifiers is not None else
                                     identifiers_for_channels([None] * in_channels))
        table = self.num_identifiers if use_icn else None

        self.stem = nn.Sequential(nn.Conv3d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.GroupNorm(GROUPS, widths[0]), nn.GELU())
        stage_in = [widths[0], widths[0], widths[1], widths[2]]
        self.encoder = nn.ModuleList(
            DALightBlock(stage_in[i], widths[i], separable=use_separable_conv and i > 0, num_identifiers=table,
                         use_csa=use_csa and i >= 2)
            for i in range(4))
        self.downsample = nn.ModuleList(
            nn.Conv3d(widths[i], widths[i], 3, stride=self.strides[i], padding=1) for i in range(3))
        # decoder[j] rebuilds the resolution of encoder stage 2 - j
        self.decoder = nn.ModuleList(
            DecoderLevel(widths[3 - j], widths[2 - j], self.strides[2 - j], use_separable_conv, table,
                         use_ssfb=use_ssfb and j > 0)
            for j in range(3))
        self.head = nn.Sequential(nn.Dropout3d(0.1), nn.Conv3d(widths[0], 64, 3, padding=1, bias=False),
                                  nn.GroupNorm(GROUPS, 64), nn.GELU(), nn.Conv3d(64, num_classes, 1))
        # 1x1 heads on the decoder levels at strides 1/cum[1] and 1/cum[2], finest first
        self.ds_heads = nn.ModuleList(nn.Conv3d(widths[i], num_classes, 1) for i in (1, 2))
        self.initialise()

    def initialise(self) -> None:
        """Departure (docs/architectures/dalight3d.md): the authors' code keeps PyTorch's default
        initialisation, with which DALight-3D learned Hippocampus under nnU-Net's SGD recipe at 0.54 x
        nnU-Net's network in 350 steps (issue 11). Here nnU-Net's own (InitWeights_He(1e-2)) with the
        convs whose output a GroupNorm or ICN normalises (stem, both convs of every block, shortcuts,
        skip merges, head) at 0.1 x He, as in LightMedSeg (`initialisation`). The ICN tables start
        at zero (a plain GroupNorm) and SSFB's alpha at 0.5; CSA's Conv1d and SSFB's Linear layers,
        which InitWeights_He leaves alone, keep PyTorch's defaults.
        """
        block_convs = (conv for block in self.modules() if isinstance(block, DALightBlock)
                       for layer in (block.conv1, block.conv2) for conv in layer.modules() if isinstance(conv, nn.Conv3d))
        he_with_small_normalised_convs(self, itertools.chain(convs_before_group_norm(self), block_convs))

    @property
    def output_strides(self) -> list[tuple[int, ...]]:
        return cumulative_strides(self.strides)[:3]

    def set_channel_identifiers(self, identifiers: Sequence[int]) -> None:
        identifiers = [int(i) for i in identifiers]
        if len(identifiers) != self.in_channels:
            raise ValueError(f"got {len(identifiers)} channel identifiers for {self.in_channels} input channels: "
                             f"give one per channel (identifiers_for_channels(channel_names))")
        if any(not 0 <= i < self.num_identifiers for i in identifiers):
            raise ValueError(f"channel identifiers {identifiers} out of range: the ICN tables have "
                             f"{self.num_identifiers} rows")
        self.channel_identifiers.copy_(torch.tensor(identifiers, dtype=torch.long))

    def forward(self, x: torch.Tensor):
        x, size = pad_to_multiple(x, cumulative_strides(self.strides)[-1])
        ids = self.channel_identifiers
        skips = []
        x = self.stem(x)
        for i, block in enumerate(self.encoder):
            x = block(x, ids)
            if i < 3:
                skips.append(x)
                x = self.downsample[i](x)
        levels = []
        for j, level in enumerate(self.decoder):
            x = level(x, skips[2 - j], ids)
            levels.append(x)
        logits = crop_to(self.head(x), size)
        if not self.deep_supervision:
            return logits
        outputs = [logits]
        for stride, head, features in zip(self.output_strides[1:], self.ds_heads, (levels[1], levels[0])):
            outputs.append(crop_to(head(features), scaled_size(size, stride)))
        return outputs
