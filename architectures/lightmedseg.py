"""LightMedSeg (Tyagi, Rathi & Goyal, arXiv 2603.07228), section 3, as a plain 3D network.

stem (Sec. 3.1) -> global anchor detector on the raw input (Sec. 3.2) and local structural prior
module on the stem output (Sec. 3.3) -> four anchor-conditioned, texture-routed encoder stages
(Sec. 3.4) -> learned multi-scale skip router (Sec. 3.5) -> four adaptive decoder stages with
anchor-relative spatial position bias (Sec. 3.6) -> 1x1 head.

The paper's four 2x steps (the stem and the three max-poolings) take nnU-Net's per-axis steps
instead; the decoder's transposed convs undo them in reverse order (output = input x step exactly).
Where the text contradicts itself or a stated figure, the choices below follow the reading the
paper's own numbers support; docs/architectures/lightmedseg.md lists each one. In particular the
decoder defaults to 3^3 transposed convs and a ghost branch on the 2C_j-channel concatenation,
which reproduces the paper's 0.48M / 0.66M parameters and 14.64 GMAC; the text's 2x2x2 / C_j
reading (about 45% short of both) is LightMedSeg(..., upsample_kernel_size=2, ghost_branch_on_concat=False).
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_lightseg.architectures.blocks.ghost import GhostConv
from nnunet_lightseg.architectures.blocks.squeeze_excitation import SqueezeExcitation
from nnunet_lightseg.architectures.initialisation import convs_before_group_norm, he_with_small_normalised_convs
from nnunet_lightseg.architectures.shapes import crop_to, cumulative_strides, pad_to_multiple, scaled_size

STEM_CHANNELS = 8  # C0
ENCODER_CHANNELS = (8, 16, 32, 64)  # C_i, Sec. 3.4
DECODER_CHANNELS = (64, 32, 16, 8)  # C_j, Sec. 3.6
ROUTER_WIDTH = 64  # Eq. 11
ANCHOR_HIDDEN = 128  # Sec. 3.2
GN_GROUPS = 4
DECODER_BRANCHES = 3  # P in Eq. 17
MODULATION_INIT_STD = 1e-2  # FiLM and position-bias projections start near the identity (LightMedSeg.initialise)
DECODER_NORM_INIT_SCALE = 3.0  # the decoder branches' GroupNorm scale at initialisation (LightMedSeg.initialise)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GN_GROUPS, channels)


def _conv3(in_channels: int, out_channels: int, ghost: bool, stride=1) -> nn.Module:
    """A 3x3x3 conv: GhostConv3D with ratio 2 (Sec. 3.1) or, for the 'w/o GhostConv3D' ablation, dense."""
    if ghost:
        return GhostConv(in_channels, out_channels, 3, stride=stride, ratio=2)
    return nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1)


def _upsampling(in_channels: int, out_channels: int, stride: Sequence[int], kernel_size: int) -> nn.ConvTranspose3d:
    """A transposed conv whose output is exactly `stride` times its input on every axis.

    Per axis, kernel k (at least the step s) with padding p = ceil((k - s) / 2) and output padding
    (k - s) mod 2: k = 3 gives p = 1 and output padding 1 for s = 2, output padding 0 for s = 1.
    An even kernel on a stride-1 axis cannot keep the size, so it shrinks by one there (k = 2: a
    1-wide kernel, i.e. kernel = stride, the text's "2x2x2" on every axis the plan halves).
    """
    kernels, paddings, output_paddings = [], [], []
    for s in stride:
        k = max(kernel_size, s)
        if s == 1 and k % 2 == 0:
            k -= 1
        p = -(-(k - s) // 2)
        kernels.append(k)
        paddings.append(p)
        output_paddings.append(s + 2 * p - k)
    return nn.ConvTranspose3d(in_channels, out_channels, tuple(kernels), stride=tuple(stride),
                              padding=tuple(paddings), output_padding=tuple(output_paddings))


def _se(channels: int) -> SqueezeExcitation:
    """SE with bottleneck b = max(4, floor(C / 8)) (Eq. 10)."""
    return SqueezeExcitation(channels, hidden_channels=max(4, channels // 8), activation=nn.SiLU)


def resample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Trilinear resampling to `size` (Sec. 3.4 and 3.5); a no-op when the size already matches."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=False)


class AnchorDetector(nn.Module):
    """Global anchor detector, Eq. 1: S = sigmoid(MLP(GAP(phi(X)))) in [0, 1]^(B x K x 3).

    phi is three (3^3 conv, stride 2, GN_4, SiLU) layers. The paper gives no width for phi; C0 = 8
    channels throughout reproduces its 8.6K parameters.
    """

    def __init__(self, in_channels: int, num_anchors: int, width: int = STEM_CHANNELS, hidden: int = ANCHOR_HIDDEN):
        super().__init__()
        layers, channels = [], in_channels
        for _ in range(3):
            layers += [nn.Conv3d(channels, width, 3, stride=2, padding=1), _norm(width), nn.SiLU()]
            channels = width
        self.encoder = nn.Sequential(*layers)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, 3 * num_anchors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        descriptor = self.encoder(x).mean(dim=(2, 3, 4))
        return torch.sigmoid(self.mlp(descriptor)).view(x.shape[0], -1, 3)


class LocalStructuralPrior(nn.Module):
    """LSPM, Sec. 3.3: returns the adapted features F0' (Eq. 5) and the texture map T (Eq. 2-3).

    The gating head psi (Eq. 4) is read as two 3^3 convs C0 -> 2C0 -> 2C0, each with GN_4 and SiLU,
    then a 1x1 conv to one channel: GN_4 cannot normalise a single channel, and this reading gives
    the paper's 10.5K parameters (and LSPM's 11.7K).
    """

    def __init__(self, channels: int = STEM_CHANNELS):
        super().__init__()
        self.smooth = nn.Sequential(nn.Conv3d(channels, channels, 5, padding=2, groups=channels),
                                    _norm(channels), nn.SiLU())
        self.texture = nn.Conv3d(channels, 1, 1)
        wide = 2 * channels
        self.gating_head = nn.Sequential(nn.Conv3d(channels, wide, 3, padding=1), _norm(wide), nn.SiLU(),
                                         nn.Conv3d(wide, wide, 3, padding=1), _norm(wide), nn.SiLU(),
                                         nn.Conv3d(wide, 1, 1))
        self.expert_weights = nn.Conv3d(1, 2, 1)
        self.experts = nn.Conv3d(channels, 2 * channels, 1)  # Z1 and Z2, two C0 -> C0 projections side by side

    def forward(self, f0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        texture = torch.sigmoid(self.texture((self.smooth(f0) - f0).abs()))
        complexity = torch.sigmoid(self.gating_head(f0))
        alpha = torch.softmax(self.expert_weights(complexity), dim=1)
        z1, z2 = self.experts(f0).chunk(2, dim=1)
        return alpha[:, :1] * z1 + alpha[:, 1:] * z2, texture


class EncoderStage(nn.Module):
    """Encoder stage i, Eq. 6-10: FiLM-conditioned 3^3 projection, texture-routed detail/smooth paths, SE.

    Without anchors the FiLM step is left out; without a texture map (no LSPM) the two paths are
    averaged (T = 1/2).
    """

    def __init__(self, in_channels: int, out_channels: int, num_anchors: int, ghost: bool):
        super().__init__()
        self.project = _conv3(in_channels, out_channels, ghost)
        # W_gamma and W_beta of Eq. 6 stacked: (2 C_i) x (3K), no bias
        self.film = nn.Linear(3 * num_anchors, 2 * out_channels, bias=False) if num_anchors else None
        self.detail = nn.Sequential(nn.Conv3d(out_channels, out_channels, 3, padding=1, groups=out_channels),
                                    _norm(out_channels), nn.SiLU())
        self.smooth = nn.Conv3d(out_channels, out_channels, 1)
        self.se = _se(out_channels)

    def forward(self, x: torch.Tensor, anchors: Optional[torch.Tensor], texture: Optional[torch.Tensor]):
        features = self.project(x)
        if self.film is not None:
            gamma, beta = self.film(anchors.flatten(1))[:, :, None, None, None].chunk(2, dim=1)
            features = (1 + gamma) * features + beta
        gate = 0.5 if texture is None else resample(texture, features.shape[2:])
        features = gate * self.detail(features) + (1 - gate) * self.smooth(features)
        return self.se(features)


class SkipRouter(nn.Module):
    """Learned multi-scale skip router, Eq. 11-13, for the two coarse decoder levels.

    Every encoder output is projected to 64 channels once (Eq. 11); at each routed level the four
    projections are resampled to the level, a two-layer 1x1 controller (256 -> 64 -> 4, shared by
    both levels: the paper's 24K parameters allow one) predicts per-voxel softmax weights, and the
    weighted sum is projected to the level's width by a per-level 1x1 conv.
    """

    def __init__(self, encoder_channels: Sequence[int], level_channels: Sequence[int], width: int = ROUTER_WIDTH):
        super().__init__()
        self.project = nn.ModuleList(nn.Conv3d(c, width, 1) for c in encoder_channels)
        sources = len(encoder_channels)
        self.controller = nn.Sequential(nn.Conv3d(sources * width, width, 1), nn.SiLU(),
                                        nn.Conv3d(width, sources, 1))
        self.out = nn.ModuleList(nn.Conv3d(width, c, 1) for c in level_channels)

    def forward(self, skips: Sequence[torch.Tensor], sizes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        projected = [project(skip) for project, skip in zip(self.project, skips)]
        routed = []
        for out, size in zip(self.out, sizes):
            aligned = [resample(p, size) for p in projected]
            weights = torch.softmax(self.controller(torch.cat(aligned, dim=1)), dim=1)
            fused = sum(weights[:, i:i + 1] * a for i, a in enumerate(aligned))
            routed.append(out(fused))
        return routed


class AlignedSkip(nn.Module):
    """A single skip (Sec. 3.5, fine levels): one encoder map, 1x1-projected to the level's width, resampled."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.project = nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, skip: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return resample(self.project(skip), size)


def position_grid(size: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """The anchor-free part of Eq. 14: d/D + h/H + w/W, shape D x H x W (device and dtype of `like`)."""
    d, h, w = (torch.arange(n, device=like.device, dtype=like.dtype) / n for n in size)
    return d.view(-1, 1, 1) + h.view(1, -1, 1) + w.view(1, 1, -1)


def anchor_offsets(anchors: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Eq. 14 for every anchor: P_k[d,h,w] = (d/D - s_kd) + (h/H - s_kh) + (w/W - s_kw), shape B x K x D x H x W."""
    return position_grid(size, anchors)[None, None] - anchors.sum(dim=-1)[:, :, None, None, None]


class DecoderStage(nn.Module):
    """Decoder stage j, Eq. 14-21: transposed-conv upsampling plus spatial position bias, 1x1 fusion
    with the skip, three per-voxel softmax-gated branches (depthwise 3^3, ghost 3^3, 1x1), SE.

    By default (the reading that reproduces the paper's parameter and MAC totals) the transposed
    conv has a 3^3 kernel and the ghost branch (Eq. 20) takes the 2C_j-channel concatenation
    [U + SPB, SKIP] of Eq. 16 instead of its 1x1 fusion. upsample_kernel_size=2 and
    ghost_branch_on_concat=False build the text as written (2x2x2 transposed conv, every branch on
    the C_j-channel fusion).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int], num_anchors: int, ghost: bool,
                 upsample_kernel_size: int = 3, ghost_branch_on_concat: bool = True):
        super().__init__()
        self.up = _upsampling(in_channels, out_channels, stride, upsample_kernel_size)
        self.position = nn.Conv3d(num_anchors, out_channels, 1) if num_anchors else None  # Eq. 15
        self.fuse = nn.Conv3d(2 * out_channels, out_channels, 1)  # Eq. 16
        self.gate = nn.Conv3d(out_channels, DECODER_BRANCHES, 1)  # Eq. 17
        self.ghost_branch_on_concat = ghost_branch_on_concat
        ghost_inputs = 2 * out_channels if ghost_branch_on_concat else out_channels
        self.branches = nn.ModuleList([
            nn.Sequential(nn.Conv3d(out_channels, out_channels, 3, padding=1, groups=out_channels),
                          _norm(out_channels), nn.SiLU()),  # Eq. 19
            nn.Sequential(_conv3(ghost_inputs, out_channels, ghost), _norm(out_channels), nn.SiLU()),  # Eq. 20
            nn.Sequential(nn.Conv3d(out_channels, out_channels, 1), _norm(out_channels), nn.SiLU()),  # Eq. 21
        ])
        self.se = _se(out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, anchors: Optional[torch.Tensor]) -> torch.Tensor:
        up = self.up(x)
        if self.position is not None:
            up = up + self.position(anchor_offsets(anchors, up.shape[2:]))
        concat = torch.cat([up, skip], dim=1)
        fused = self.fuse(concat)
        weights = torch.softmax(self.gate(fused), dim=1)
        inputs = (fused, concat if self.ghost_branch_on_concat else fused, fused)
        gated = sum(weights[:, p:p + 1] * branch(inputs[p]) for p, branch in enumerate(self.branches))  # Eq. 18
        return self.se(gated)


class LightMedSeg(nn.Module):
    """LightMedSeg for 3D volumes.

    strides: four per-axis steps, (stem, pool after stage 1, pool after stage 2, pool after stage 3);
    the paper's configuration is 2x everywhere. ghost=False is the 'w/o GhostConv3D' variant;
    use_lspm, use_anchors and use_skip_router=False are the paper's ablations (Table 4).
    upsample_kernel_size (3) and ghost_branch_on_concat (True) pick the decoder reading that
    reproduces the paper's stated totals; 2 and False build Sec. 3.6 as written (see DecoderStage).
    Outputs: the full-resolution logits, then (deep supervision) 1x1 heads on decoder stages 3, 2, 1.
    """

    def __init__(self, in_channels: int, num_classes: int, strides: Sequence[Sequence[int]],
                 deep_supervision: bool = False, ghost: bool = True, num_anchors: int = 8,
                 use_lspm: bool = True, use_anchors: bool = True, use_skip_router: bool = True,
                 upsample_kernel_size: int = 3, ghost_branch_on_concat: bool = True):
        super().__init__()
        strides = [tuple(int(s) for s in step) for step in strides]
        if len(strides) != 4 or any(len(step) != 3 for step in strides):
            raise ValueError(f"LightMedSeg needs four 3D steps (stem and three poolings), got {strides}")
        if use_anchors and num_anchors < 1:
            raise ValueError(f"num_anchors must be at least 1, got {num_anchors}; use use_anchors=False to drop them")
        if upsample_kernel_size < 1:
            raise ValueError(f"upsample_kernel_size must be at least 1, got {upsample_kernel_size}")
        self.in_channels, self.strides = in_channels, strides
        self.deep_supervision = deep_supervision
        anchors = num_anchors if use_anchors else 0

        self.stem = nn.Sequential(_conv3(in_channels, STEM_CHANNELS, ghost, stride=strides[0]),
                                  _norm(STEM_CHANNELS))
        self.anchor_detector = AnchorDetector(in_channels, num_anchors) if use_anchors else None
        self.lspm = LocalStructuralPrior(STEM_CHANNELS) if use_lspm else None
        widths = (STEM_CHANNELS,) + ENCODER_CHANNELS
        self.encoder = nn.ModuleList(EncoderStage(widths[i], widths[i + 1], anchors, ghost) for i in range(4))
        self.pools = nn.ModuleList(nn.MaxPool3d(step, step) for step in strides[1:])
        self.bottleneck = nn.Conv3d(ENCODER_CHANNELS[-1], DECODER_CHANNELS[0], 1)

        # decoder level j takes its single skip from E^(4-j) (E^(0): the stem output), Sec. 3.5
        sources = tuple(reversed(widths[:4]))  # 32, 16, 8, 8
        routed = 2 if use_skip_router else 0
        self.router = SkipRouter(ENCODER_CHANNELS, DECODER_CHANNELS[:routed]) if routed else None
        self.skips = nn.ModuleList(AlignedSkip(sources[j], DECODER_CHANNELS[j]) for j in range(routed, 4))
        inputs = (DECODER_CHANNELS[0],) + DECODER_CHANNELS[:3]
        self.decoder = nn.ModuleList(DecoderStage(inputs[j], DECODER_CHANNELS[j], strides[3 - j], anchors, ghost,
                                                  upsample_kernel_size, ghost_branch_on_concat)
                                     for j in range(4))
        self.head = nn.Conv3d(DECODER_CHANNELS[-1], num_classes, 1)
        self.ds_heads = nn.ModuleList(nn.Conv3d(c, num_classes, 1) for c in reversed(DECODER_CHANNELS[:3]))
        self.initialise()

    def initialise(self) -> None:
        """The paper states no initialisation and no code is published, so nnU-Net's own: He normal
        (negative slope 1e-2) for every conv and transposed conv, biases 0 (InitWeights_He(1e-2)).

        Departure (docs/architectures/lightmedseg.md): the anchor modulations start close to the
        identity. FiLM's W_gamma, W_beta (Eq. 6) and the position-bias projection (Eq. 15) are drawn
        from N(0, MODULATION_INIT_STD^2) with zero bias, so that at initialisation no input-independent
        term drowns the features, while the anchor detector still gets a gradient from the first
        step. With PyTorch's defaults the gradient at the bottleneck was 0.08x that at the logits and
        SGD barely moved the encoder (issue 11; `python -m nnunet_lightseg.measure.gradient_flow`).

        Departure too: the convs whose output a GroupNorm normalises (stem, anchor detector, LSPM's
        smoothing and gating head, the encoders' detail path, the decoders' three branches; biases
        0) start at 0.1 x He (`initialisation.he_with_small_normalised_convs`, which says why): at He
        scale SGD's relative steps on them were 1e-4 to 5e-4 in the deep path and the network stayed
        at all-background for 350 steps on Hippocampus (docs/architectures/lightmedseg.md).

        Departure too: the GroupNorms of the decoder's three branches (Eq. 19-21) start with scale
        DECODER_NORM_INIT_SCALE instead of 1, so that each decoder stage's output starts at about unit
        RMS instead of the 0.2-0.25 that the softmax average of the branches (Eq. 18) and the SE gate
        (about x0.5, Eq. 10) leave. The head's weight gradient scales with its input: at scale 1 the
        head read RMS 0.21 and its relative update was 0.057 (at 3: 0.84 and 0.33;
        `measure.gradient_flow`), and in 350 of nnU-Net's SGD steps on Hippocampus the network found
        one foreground class at a time, or none (docs/architectures/lightmedseg.md).
        """
        he_with_small_normalised_convs(self, convs_before_group_norm(self))
        modulations = [stage.film for stage in self.encoder] + [stage.position for stage in self.decoder]
        for layer in filter(None, modulations):
            nn.init.normal_(layer.weight, std=MODULATION_INIT_STD)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        for norm in (m for stage in self.decoder for m in stage.branches.modules() if isinstance(m, nn.GroupNorm)):
            nn.init.constant_(norm.weight, DECODER_NORM_INIT_SCALE)

    @property
    def output_strides(self) -> list[tuple[int, ...]]:
        return cumulative_strides(self.strides)[:4]

    def forward(self, x: torch.Tensor):
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"LightMedSeg expects (B, in_channels={self.in_channels}, D, H, W) input, got "
                             f"{tuple(x.shape)}: build it with the right number of input channels")
        total = cumulative_strides(self.strides)[-1]
        padded, size = pad_to_multiple(x, total)
        anchors = self.anchor_detector(x) if self.anchor_detector is not None else None

        f0 = self.stem(padded)
        features, texture = self.lspm(f0) if self.lspm is not None else (f0, None)
        encoded = []
        for i, stage in enumerate(self.encoder):
            features = stage(features if i == 0 else self.pools[i - 1](features), anchors, texture)
            encoded.append(features)

        level_sizes = [tuple(p // s for p, s in zip(padded.shape[2:], stride))
                       for stride in reversed(cumulative_strides(self.strides)[:4])]
        sources = [encoded[2], encoded[1], encoded[0], f0]
        routed = self.router(encoded, level_sizes[:2]) if self.router is not None else []
        skips = routed + [skip(sources[j], level_sizes[j]) for j, skip in enumerate(self.skips, start=len(routed))]

        decoded, y = [], self.bottleneck(encoded[-1])
        for stage, skip in zip(self.decoder, skips):
            y = stage(y, skip, anchors)
            decoded.append(y)

        logits = crop_to(self.head(decoded[-1]), size)
        if not self.deep_supervision:
            return logits
        outputs = [logits]
        for head, features, stride in zip(self.ds_heads, reversed(decoded[:3]), self.output_strides[1:]):
            outputs.append(crop_to(head(features), scaled_size(size, stride)))
        return outputs
