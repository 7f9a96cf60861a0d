"""MONAI's comparison networks as nnU-Net trainers: `nnUNetTrainerMonai<Name>`.

The networks and how they are fitted to a plan are registry specs (nnunet_lightseg/zoo/monai.py).
Training uses nnU-Net's recipe unchanged (SGD, poly LR, Dice + CE, its augmentation), so the
comparison is between architectures; the networks have a single output, so deep supervision is
off (as in nnU-Net's `primus_trainers.py`).
"""
from nnunet_lightseg.trainers.base import LightSegTrainer


class nnUNetTrainerMonaiResUNet(LightSegTrainer):
    model_name = "MonaiResUNet"


class nnUNetTrainerMonaiAttentionUNet(LightSegTrainer):
    model_name = "MonaiAttentionUNet"


class nnUNetTrainerMonaiVNet(LightSegTrainer):
    model_name = "MonaiVNet"


class nnUNetTrainerMonaiUNETR(LightSegTrainer):
    model_name = "MonaiUNETR"


class nnUNetTrainerMonaiSwinUNETR(LightSegTrainer):
    model_name = "MonaiSwinUNETR"


class nnUNetTrainerMonaiSegResNet(LightSegTrainer):
    model_name = "MonaiSegResNet"
