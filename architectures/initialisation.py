"""The initialisation our networks use where their papers and authors' code leave them untrainable
under nnU-Net's recipe (issue 11): nnU-Net's own, with the normalised convs started small.

nnU-Net initialises its networks with `InitWeights_He(1e-2)` (He normal, negative slope 1e-2,
biases 0). For a conv whose output a GroupNorm (or ICN) normalises, the network computes the same
function at any scale of the conv's weights, but a plain SGD step moves such a weight by about
lr |grad| / |w| relative to its size, and |grad| falls as 1 / |w|: the relative step goes as
1 / |w|^2. At He scale those steps were too small, within 350 of nnU-Net's steps on Hippocampus,
for LightMedSeg to leave all-background and for DALight-3D to learn both classes; at
NORMALISED_CONV_INIT_GAIN x He they are 100 times larger (docs/architectures/lightmedseg.md,
docs/architectures/dalight3d.md).
"""
from typing import Iterable, Iterator

import torch
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

NORMALISED_CONV_INIT_GAIN = 0.1  # normalised convs start at this x He


def convs_before_group_norm(network: nn.Module) -> Iterator[nn.Module]:
    """The convs (all convs inside the layer) of every (layer, GroupNorm) pair inside an nn.Sequential."""
    for sequence in network.modules():
        if isinstance(sequence, nn.Sequential):
            for layer, following in zip(sequence, list(sequence)[1:]):
                if isinstance(following, nn.GroupNorm):
                    yield from (m for m in layer.modules() if isinstance(m, nn.modules.conv._ConvNd))


def he_with_small_normalised_convs(network: nn.Module, normalised_convs: Iterable[nn.Module]) -> None:
    """`InitWeights_He(1e-2)` on every conv and transposed conv of `network` (biases 0), then the
    weights of `normalised_convs` scaled by NORMALISED_CONV_INIT_GAIN (each once)."""
    network.apply(InitWeights_He(1e-2))
    with torch.no_grad():
        for conv in dict.fromkeys(normalised_convs):
            conv.weight.mul_(NORMALISED_CONV_INIT_GAIN)
