"""UltraLightUNet trainers, for both `2d` and `3d_fullres`.

The default trainers use nnU-Net's recipe; `_Paper` uses the paper's 3D recipe (Sec. 4 and
Appendix A.3: AdamW, lr 1e-3, DiceCE loss, no deep supervision).
"""
from nnunet_lightseg.trainers.base import LightSegTrainer
from nnunet_lightseg.trainers.recipes import PaperRecipe


class nnUNetTrainerUltraLightUNet(LightSegTrainer):
    model_name = "UltraLightUNet"


class nnUNetTrainerUltraLightUNet_T(LightSegTrainer):
    model_name = "UltraLightUNet_T"


class nnUNetTrainerUltraLightUNet_S(LightSegTrainer):
    model_name = "UltraLightUNet_S"


class nnUNetTrainerUltraLightUNet_M(LightSegTrainer):
    model_name = "UltraLightUNet_M"


class nnUNetTrainerUltraLightUNet_L(LightSegTrainer):
    model_name = "UltraLightUNet_L"


class nnUNetTrainerUltraLightUNet_MKIROnly(LightSegTrainer):
    model_name = "UltraLightUNet_MKIROnly"


class nnUNetTrainerUltraLightUNet_MKIR_GAG(LightSegTrainer):
    model_name = "UltraLightUNet_MKIR_GAG"


class nnUNetTrainerUltraLightUNet_MKIR_MKIRA(LightSegTrainer):
    model_name = "UltraLightUNet_MKIR_MKIRA"


class nnUNetTrainerUltraLightUNet_Paper(PaperRecipe, nnUNetTrainerUltraLightUNet):
    """AdamW at a constant lr 1e-3 (the paper names no schedule), torch's default weight decay
    (0.01; the paper gives none for 3D), nnU-Net's Dice + CE (1:1, as MONAI's DiceCELoss)."""

    paper_lr = 1e-3
    paper_weight_decay = 1e-2
    paper_min_lr = 1e-3
