"""MONAI's comparison networks as nnU-Net trainers: `nnUNetTrainerMonai<Name>`.

The networks are MONAI's own (`monai.networks.nets`), not rewritten here. Each trainer fits its
network to the nnU-Net plan: dimensionality (2d or 3d_fullres), input channels, output heads,
the plan's per-axis downsampling steps where the network takes strides (UNet, AttentionUnet),
and the patch size where the network needs it (UNETR's `img_size`). Networks that only accept
sizes divisible by a fixed factor (VNet 16, UNETR 16, SwinUNETR 32 and >= 64, SegResNet 8) see the patch
zero-padded at the far end of each axis up to that factor, and their output is cropped back
(`PadToMultiple`); the padded size is what they compute on, and what the profile counts.

Training uses nnU-Net's recipe unchanged (SGD, poly LR, Dice + CE, its augmentation), so the
comparison is between architectures, with deep supervision off: these networks have a single
output. As in nnU-Net's `primus_trainers.py`, `enable_deep_supervision` is False and
`set_deep_supervision_enabled` does nothing. The hyper-parameters are the ones the networks'
papers and MONAI's reference tutorials use, listed in `description`.
"""
from __future__ import annotations

import math
from typing import ClassVar, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_lightseg.registry import UnsupportedConfigurationError
from nnunet_lightseg.trainers.base import ITERATIONS_VARIABLE, VAL_ITERATIONS_VARIABLE, _positive_int_from_env

UNET_CHANNELS = (16, 32, 64, 128, 256)  # MONAI's residual U-Net tutorials; Attention U-Net likewise


class PadToMultiple(nn.Module):
    """Zero-pad the spatial axes of the input up to a multiple of `multiple` (and at least `minimum`),
    crop the output back."""

    def __init__(self, network: nn.Module, multiple: int, minimum: int = 0):
        super().__init__()
        self.network = network
        self.multiple, self.minimum = multiple, minimum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        padding = []
        for s, target in zip(reversed(size), reversed(padded(size, self.multiple, self.minimum))):
            padding += [0, target - s]  # F.pad takes the last axis first
        if any(padding):
            x = F.pad(x, padding)
        out = self.network(x)
        return out[(slice(None), slice(None), *(slice(0, s) for s in size))]


def padded(size: Sequence[int], multiple: int, minimum: int = 0) -> list[int]:
    return [max(minimum, math.ceil(int(s) / multiple) * multiple) for s in size]


class MonaiBaselineTrainer(nnUNetTrainer):
    """nnU-Net's recipe over a MONAI network, deep supervision off; subclasses implement `build`."""

    paper: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.num_iterations_per_epoch = _positive_int_from_env(ITERATIONS_VARIABLE, self.num_iterations_per_epoch)
        self.num_val_iterations_per_epoch = _positive_int_from_env(VAL_ITERATIONS_VARIABLE,
                                                                   self.num_val_iterations_per_epoch)

    @classmethod
    def build(cls, dim: int, in_channels: int, out_channels: int, patch_size: list[int],
              plan_steps: list[tuple[int, ...]]) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """The MONAI network fitted to the plan; `enable_deep_supervision` is ignored (single output)."""
        patch_size = [int(s) for s in configuration_manager.patch_size]
        dim = len(patch_size)
        if dim not in (2, 3):
            raise UnsupportedConfigurationError(f"{cls.__name__}: patch size {patch_size} is neither 2D nor 3D")
        plan_steps = [tuple(int(s) for s in step) for step in configuration_manager.pool_op_kernel_sizes[1:]]
        return cls.build(dim, num_input_channels, num_output_channels, patch_size, plan_steps)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass


def _unet_strides(cls, plan_steps):
    steps = plan_steps[:len(UNET_CHANNELS) - 1]
    if not steps:
        raise UnsupportedConfigurationError(
            f"{cls.__name__} needs at least one downsampling step in the plan, which has none (patch too small). "
            f"Use a configuration with a larger patch size.")
    return UNET_CHANNELS[:len(steps) + 1], steps


class nnUNetTrainerMonaiResUNet(MonaiBaselineTrainer):
    paper = "Kerfoot et al., Left-ventricle quantification using residual U-Net, STACOM 2018 (MONAI UNet)"
    description = "monai.networks.nets.UNet, residual units (num_res_units=2), channels 16..256, plan strides"

    @classmethod
    def build(cls, dim, in_channels, out_channels, patch_size, plan_steps):
        from monai.networks.nets import UNet

        channels, strides = _unet_strides(cls, plan_steps)
        return UNet(dim, in_channels, out_channels, channels=channels, strides=strides, num_res_units=2)


class nnUNetTrainerMonaiAttentionUNet(MonaiBaselineTrainer):
    paper = "Oktay et al., Attention U-Net, MIDL 2018 (MONAI AttentionUnet)"
    description = "monai.networks.nets.AttentionUnet, channels 16..256, plan strides"

    @classmethod
    def build(cls, dim, in_channels, out_channels, patch_size, plan_steps):
        from monai.networks.nets import AttentionUnet

        channels, strides = _unet_strides(cls, plan_steps)
        return AttentionUnet(dim, in_channels, out_channels, channels=channels, strides=strides)


class nnUNetTrainerMonaiVNet(MonaiBaselineTrainer):
    paper = "Milletari et al., V-Net, 3DV 2016 (MONAI VNet)"
    description = "monai.networks.nets.VNet, MONAI defaults; patch padded to a multiple of 16"

    @classmethod
    def build(cls, dim, in_channels, out_channels, patch_size, plan_steps):
        from monai.networks.nets import VNet

        if 16 % in_channels:
            raise UnsupportedConfigurationError(
                f"{cls.__name__}: MONAI's VNet repeats the input to 16 channels, so the number of input channels "
                f"must divide 16; this dataset has {in_channels}. Use another baseline for this dataset.")
        return PadToMultiple(VNet(dim, in_channels, out_channels), 16)


class nnUNetTrainerMonaiUNETR(MonaiBaselineTrainer):
    paper = "Hatamizadeh et al., UNETR, WACV 2022 (MONAI UNETR)"
    description = ("monai.networks.nets.UNETR, ViT-B/16 (hidden 768, 12 heads, MLP 3072), feature size 16; "
                   "patch padded to a multiple of 16")

    @classmethod
    def build(cls, dim, in_channels, out_channels, patch_size, plan_steps):
        from monai.networks.nets import UNETR

        return PadToMultiple(UNETR(in_channels, out_channels, img_size=padded(patch_size, 16), feature_size=16,
                                   spatial_dims=dim), 16)


class nnUNetTrainerMonaiSwinUNETR(MonaiBaselineTrainer):
    paper = "Hatamizadeh et al., Swin UNETR, BrainLes 2021 (MONAI SwinUNETR)"
    description = ("monai.networks.nets.SwinUNETR, feature size 48, window 7; patch padded to a multiple of 32, "
                   "at least 64 (its instance-normed bottleneck at 1/32 needs more than one voxel)")

    @classmethod
    def build(cls, dim, in_channels, out_channels, patch_size, plan_steps):
        from monai.networks.nets import SwinUNETR

        return PadToMultiple(SwinUNETR(in_channels, out_channels, feature_size=48, spatial_dims=dim), 32, 64)


class nnUNetTrainerMonaiSegResNet(MonaiBaselineTrainer):
    paper = ("Myronenko, 3D MRI brain tumor segmentation using autoencoder regularization, BrainLes 2018 "
             "(MONAI SegResNet)")
    description = ("monai.networks.nets.SegResNet, 32 initial filters, blocks down (1,2,2,4) up (1,1,1), "
                   "no VAE branch; patch padded to a multiple of 8")

    @classmethod
    def build(cls, dim, in_channels, out_channels, patch_size, plan_steps):
        from monai.networks.nets import SegResNet

        return PadToMultiple(SegResNet(dim, init_filters=32, in_channels=in_channels, out_channels=out_channels), 8)
