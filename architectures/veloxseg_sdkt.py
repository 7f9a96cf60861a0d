"""Spatially decoupled knowledge transfer (SDKT) for VeloxSeg: training-only reconstruction decoders.

VeloxSeg (Lu et al., ICLR 2026), abstract and ../shared/specs/veloxseg.md: per modality, a
reconstruction decoder shaped like the segmentation decoder, fed the fused encoder features plus
that modality's transformer features, reconstructs that modality's input (self-supervision). The
Gram matrix (C x C, normalised by C * voxels) of the segmentation decoder's finest features is
pulled towards each reconstruction decoder's: texture statistics transfer, spatial layout does
not ("spatially decoupled"). These modules are never part of the inference network.
"""
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_lightseg.architectures.blocks.pixel_shuffle import pixel_shuffle
from nnunet_lightseg.architectures.shapes import crop_to
from nnunet_lightseg.architectures.veloxseg import JLC, VeloxFeatures, VeloxSeg, upsample


class ReconstructionDecoder(nn.Module):
    """r4 = e4 + t4; r_l = JLC(e_l + t_l + up(r_{l+1})); 3^3 conv + pixel shuffle to one channel."""

    def __init__(self, network: VeloxSeg):
        super().__init__()
        w, strides = network.widths, network.strides
        self.first_stride = strides[0]
        self.up = nn.ModuleList(upsample(w[i + 1], w[i], strides[i + 1]) for i in range(3))
        self.blocks = nn.ModuleList(JLC(w[i], network.group_widths[i], network.expansions[i],
                                        network.kernel_sizes, network.dropout) for i in range(3))
        self.head = nn.Conv3d(w[0], math.prod(strides[0]), 3, padding=1)

    def forward(self, encoder: Sequence[torch.Tensor], stream: Sequence[torch.Tensor]):
        """(reconstruction at the padded input size, finest features)."""
        r = encoder[3] + stream[3]
        for level in (2, 1, 0):
            r = self.blocks[level](encoder[level] + stream[level] + self.up[level](r))
        return pixel_shuffle(self.head(r), self.first_stride), r


class SDKTTeacher(nn.Module):
    """One reconstruction decoder per modality of `network` (built from its widths and strides)."""

    def __init__(self, network: VeloxSeg):
        super().__init__()
        self.decoders = nn.ModuleList(ReconstructionDecoder(network) for _ in range(network.in_channels))

    def forward(self, features: VeloxFeatures, size: Sequence[int]):
        """(reconstructions (B, modalities, *size), list of finest features per modality)."""
        outputs = [decoder(features.encoder, stream) for decoder, stream in zip(self.decoders, features.streams)]
        reconstruction = crop_to(torch.cat([r for r, _ in outputs], dim=1), size)
        return reconstruction, [f for _, f in outputs]


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """G = F F^T / (C * voxels) per sample, F the (C, voxels) feature matrix; computed in float32."""
    f = features.float().flatten(2)
    return f @ f.transpose(1, 2) / (f.shape[1] * f.shape[2])


def gram_loss(student: torch.Tensor, teachers: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over teachers of MSE(Gram(student), Gram(teacher)); gradients reach both sides."""
    g = gram_matrix(student)
    return torch.stack([F.mse_loss(g, gram_matrix(t)) for t in teachers]).mean()


def sdkt_losses(teacher: SDKTTeacher, features: VeloxFeatures, data: torch.Tensor):
    """(reconstruction MSE against the input, Gram loss), both in float32."""
    reconstruction, teacher_features = teacher(features, data.shape[2:])
    return F.mse_loss(reconstruction.float(), data.float()), gram_loss(features.decoder, teacher_features)
