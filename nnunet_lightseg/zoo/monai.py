"""MONAI's comparison networks, fitted to an nnU-Net plan: `Monai<Name>`, trained by `nnUNetTrainerMonai<Name>`.

The networks are MONAI's own (`monai.networks.nets`), not rewritten here. Each is fitted to the plan:
dimensionality (2d or 3d_fullres), input channels, output heads, the plan's per-axis downsampling
steps where the network takes strides (UNet, AttentionUnet), and the patch size where the network
needs it (UNETR's `img_size`). Networks that only accept sizes divisible by a fixed factor (VNet 16,
UNETR 16, SwinUNETR 32 and >= 64, SegResNet 8) see the patch zero-padded at the far end of each axis
up to that factor, and their output is cropped back (`PadToMultiple`); the padded size is what they
compute on, and what the profile counts. They have a single output: no deep supervision. The
hyper-parameters are the ones the networks' papers and MONAI's reference tutorials use, listed in
each description.
"""
from typing import Optional

import torch
from torch import nn

from nnunet_lightseg.architectures.shapes import crop_to, pad_to_multiple, padded_size
from nnunet_lightseg.registry import ModelSpec, Plan, fit_strides, register

UNET_CHANNELS = (16, 32, 64, 128, 256)  # MONAI's residual U-Net tutorials; Attention U-Net likewise


class PadToMultiple(nn.Module):
    """Zero-pad the spatial axes of the input up to a multiple of `multiple` (and at least `minimum`),
    crop the output back."""

    def __init__(self, network: nn.Module, multiple: int, minimum: int = 0):
        super().__init__()
        self.network = network
        self.multiple, self.minimum = multiple, minimum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(x, (self.multiple,) * (x.ndim - 2), self.minimum)
        return crop_to(self.network(padded), size)


def _unet_steps(plan: Plan) -> list[tuple[int, ...]]:
    return fit_strides(plan, len(UNET_CHANNELS) - 1) if plan.steps is None else list(plan.steps[:len(UNET_CHANNELS) - 1])


def _needs_a_step(plan: Plan) -> Optional[str]:
    if _unet_steps(plan):
        return None
    return "the network needs at least one downsampling step in the plan, which has none (patch too small). " \
           "Use a configuration with a larger patch size."


def _vnet_channels(plan: Plan) -> Optional[str]:
    if 16 % plan.in_channels == 0:
        return None
    return (f"MONAI's VNet repeats the input to 16 channels, so the number of input channels must divide 16; "
            f"this dataset has {plan.in_channels}. Use another baseline for this dataset.")


def _res_unet(plan):
    from monai.networks.nets import UNet

    steps = _unet_steps(plan)
    return UNet(plan.dim, plan.in_channels, plan.num_classes, channels=UNET_CHANNELS[:len(steps) + 1], strides=steps,
                num_res_units=2)


def _attention_unet(plan):
    from monai.networks.nets import AttentionUnet

    steps = _unet_steps(plan)
    return AttentionUnet(plan.dim, plan.in_channels, plan.num_classes, channels=UNET_CHANNELS[:len(steps) + 1],
                         strides=steps)


def _vnet(plan):
    from monai.networks.nets import VNet

    return PadToMultiple(VNet(plan.dim, plan.in_channels, plan.num_classes), 16)


def _unetr(plan):
    from monai.networks.nets import UNETR

    return PadToMultiple(UNETR(plan.in_channels, plan.num_classes, img_size=padded_size(plan.patch_size, (16,) * plan.dim),
                               feature_size=16, spatial_dims=plan.dim), 16)


def _swin_unetr(plan):
    from monai.networks.nets import SwinUNETR

    return PadToMultiple(SwinUNETR(plan.in_channels, plan.num_classes, feature_size=48, spatial_dims=plan.dim), 32, 64)


def _seg_res_net(plan):
    from monai.networks.nets import SegResNet

    return PadToMultiple(SegResNet(plan.dim, init_filters=32, in_channels=plan.in_channels,
                                   out_channels=plan.num_classes), 8)


BASELINES = (
    ("MonaiResUNet", _res_unet, _needs_a_step,
     "Kerfoot et al., Left-ventricle quantification using residual U-Net, STACOM 2018 (MONAI UNet)",
     "monai.networks.nets.UNet, residual units (num_res_units=2), channels 16..256, plan strides"),
    ("MonaiAttentionUNet", _attention_unet, _needs_a_step,
     "Oktay et al., Attention U-Net, MIDL 2018 (MONAI AttentionUnet)",
     "monai.networks.nets.AttentionUnet, channels 16..256, plan strides"),
    ("MonaiVNet", _vnet, _vnet_channels, "Milletari et al., V-Net, 3DV 2016 (MONAI VNet)",
     "monai.networks.nets.VNet, MONAI defaults; patch padded to a multiple of 16"),
    ("MonaiUNETR", _unetr, None, "Hatamizadeh et al., UNETR, WACV 2022 (MONAI UNETR)",
     "monai.networks.nets.UNETR, ViT-B/16 (hidden 768, 12 heads, MLP 3072), feature size 16; "
     "patch padded to a multiple of 16"),
    ("MonaiSwinUNETR", _swin_unetr, None, "Hatamizadeh et al., Swin UNETR, BrainLes 2021 (MONAI SwinUNETR)",
     "monai.networks.nets.SwinUNETR, feature size 48, window 7; patch padded to a multiple of 32, at least 64 "
     "(its instance-normed bottleneck at 1/32 needs more than one voxel)"),
    ("MonaiSegResNet", _seg_res_net, None,
     "Myronenko, 3D MRI brain tumor segmentation using autoencoder regularization, BrainLes 2018 (MONAI SegResNet)",
     "monai.networks.nets.SegResNet, 32 initial filters, blocks down (1,2,2,4) up (1,1,1), no VAE branch; "
     "patch padded to a multiple of 8"),
)

for _name, _build, _requirement, _paper, _description in BASELINES:
    register(ModelSpec(name=_name, family="MONAI", paper=_paper, dims=(2, 3), build=_build, description=_description,
                       requirement=_requirement, deep_supervision=False, baseline=True))
