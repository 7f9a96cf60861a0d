"""MONAI's comparison networks as nnU-Net trainers, derived from the registry: `nnUNetTrainerMonai<Name>`.

The networks and how they are fitted to a plan are registry specs (nnunet_lightseg/zoo/monai.py).
Training uses nnU-Net's recipe unchanged (SGD, poly LR, Dice + CE, its augmentation), so the
comparison is between architectures; the networks have a single output, so deep supervision is
off (as in nnU-Net's `primus_trainers.py`).
"""
from nnunet_lightseg.trainers.base import registry_trainers

globals().update(registry_trainers("MONAI", __name__))
