"""CPU training layout: conv weights, and input batches, channels-last (a layout only, same maths).

Chosen per network from measurements (docs/performance.md, "CPU training"; `python -m
nnunet_lightseg.measure.training_layout`): the four paper networks train faster on a CPU with
channels-last weights and input batches. Other networks (the baselines) keep torch's layout.
`LightSegTrainer.initialize` and `profile`'s training step apply it.
"""
import torch
from torch import nn

from nnunet_lightseg.architectures.dalight3d import DALight3D
from nnunet_lightseg.architectures.lightmedseg import LightMedSeg
from nnunet_lightseg.architectures.ultralightunet import UltraLightUNet
from nnunet_lightseg.architectures.veloxseg import VeloxSeg
from nnunet_lightseg.memory_layout import channels_last_format, channels_last_weights, to_channels_last

# network class -> whether its input batches go channels-last too (its conv weights always do)
CHANNELS_LAST_TRAINING = {UltraLightUNet: True, VeloxSeg: True, LightMedSeg: True, DALight3D: True}


def _channels_last_input(module: nn.Module, args: tuple):
    """Forward pre-hook: in training, hand the network its input batch channels-last (a one-channel
    batch with explicit channels-last strides, `to_channels_last`)."""
    if module.training and args and isinstance(args[0], torch.Tensor) and args[0].ndim in (4, 5):
        return (to_channels_last(args[0], channels_last_format(args[0].ndim)), *args[1:])
    return None


def apply_training_memory_format(network: nn.Module, ndim: int) -> bool:
    """For CPU training of a network named in CHANNELS_LAST_TRAINING: its conv weights channels-last,
    in place, and its training batches too where the table says so (a forward pre-hook). Parameters
    stay the same objects; state_dict keys and values do not change; hooks are not saved.
    Returns whether the network was changed."""
    if type(network) not in CHANNELS_LAST_TRAINING:
        return False
    channels_last_weights(network, ndim)
    if CHANNELS_LAST_TRAINING[type(network)]:
        network.register_forward_pre_hook(_channels_last_input)
    return True
