"""UltraLightUNet trainers, derived from the registry: `2d` and `3d_fullres` under nnU-Net's recipe.

`nnUNetTrainer<M>` for every registered UltraLightUNet model M (T, S, base, M, L and the ablations)
uses nnU-Net's recipe; `nnUNetTrainer<M>_Paper` the paper's 3D recipe (Sec. 4 and Appendix A.3:
AdamW, lr 1e-3, DiceCE loss, no deep supervision, 40,000 iterations = 160 nnU-Net epochs) and
refuses 2D configurations: the paper's 2D recipes (lr 1e-4, its own losses and batch sizes,
gradient clipping, multi-scale training) are not implemented (docs/architectures/ultralightunet.md).
Every UltraLightUNet trainer trains in float32 on CUDA (`UltraLightUNetTrainer`).
"""
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_lightseg.registry import UnsupportedConfigurationError
from nnunet_lightseg.trainers.base import LightSegTrainer, registry_trainers
from nnunet_lightseg.trainers.precision import FullPrecisionTraining
from nnunet_lightseg.trainers.recipes import PaperRecipe


class UltraLightUNetTrainer(FullPrecisionTraining, LightSegTrainer):
    """nnU-Net's recipe in float32 on CUDA: no autocast in the network's forward, no GradScaler.

    Departure from nnU-Net's float16 mixed precision (docs/architectures/ultralightunet.md,
    "Precision"): with the authors' N(0, 0.02) initialisation before batch norm, its gradients start
    about 100 times larger than nnU-Net's network's (largest weight gradient 49 against 0.36), so
    float16 overflows until the GradScaler has fallen from 2^16 to 2^8, where the small gradients of
    the deep layers underflow (`python -m nnunet_lightseg.measure.loss_scale`). On Hippocampus fold 0, 350 steps on a GPU: mean Dice 0.25-0.30 with mixed
    precision, 0.42-0.78 in float32 (three seeds each; docs/benchmarks.md).
    """


class UltraLightUNetPaperRecipe(PaperRecipe):
    """AdamW at a constant lr 1e-3 (the paper names no schedule), torch's default weight decay
    (0.01; the paper gives none for 3D), nnU-Net's Dice + CE (1:1, as MONAI's DiceCELoss), 3D only."""

    paper_lr = 1e-3
    paper_weight_decay = 1e-2
    paper_min_lr = 1e-3
    paper_epochs = 160  # the paper's 40,000 iterations at nnU-Net's 250 per epoch

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        # Refused before nnU-Net makes the fold folder and its log.
        if len(PlansManager(plans).get_configuration(configuration).patch_size) != 3:
            default = type(self).__name__.removesuffix("_Paper")
            raise UnsupportedConfigurationError(
                f"{type(self).__name__}: the paper's 2D recipes are not implemented, only its 3D one; use a 3D "
                f"configuration (3d_fullres), or train {default} (nnU-Net's recipe) on {configuration}.")
        super().__init__(plans, configuration, fold, dataset_json, device)


globals().update(registry_trainers("UltraLightUNet", __name__, base=UltraLightUNetTrainer,
                                   paper_recipe=UltraLightUNetPaperRecipe))
