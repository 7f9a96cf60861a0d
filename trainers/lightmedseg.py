"""LightMedSeg trainers, `3d_fullres` (and the other 3D configurations) only.

The default trainers use nnU-Net's recipe; `_Paper` uses the paper's (Sec. 3.7 and 4): Dice + CE +
0.5 x boundary BCE, all weighted by inverse voxel frequency; AdamW, lr 2e-4, weight decay 1e-5, a
short warm-up then cosine annealing to 1e-9; no deep supervision.
"""
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_lightseg.registry import UnsupportedConfigurationError
from nnunet_lightseg.trainers.base import LightSegTrainer
from nnunet_lightseg.trainers.lightmedseg_loss import LightMedSegLoss
from nnunet_lightseg.trainers.recipes import PaperRecipe


class nnUNetTrainerLightMedSeg(LightSegTrainer):
    model_name = "LightMedSeg"


class nnUNetTrainerLightMedSeg_StandardConv(LightSegTrainer):
    model_name = "LightMedSeg_StandardConv"


class nnUNetTrainerLightMedSeg_K16(LightSegTrainer):
    model_name = "LightMedSeg_K16"


class nnUNetTrainerLightMedSeg_K32(LightSegTrainer):
    model_name = "LightMedSeg_K32"


class nnUNetTrainerLightMedSeg_noLSPM(LightSegTrainer):
    model_name = "LightMedSeg_noLSPM"


class nnUNetTrainerLightMedSeg_noAnchors(LightSegTrainer):
    model_name = "LightMedSeg_noAnchors"


class nnUNetTrainerLightMedSeg_noSkipRouter(LightSegTrainer):
    model_name = "LightMedSeg_noSkipRouter"


class nnUNetTrainerLightMedSeg_Paper(PaperRecipe, nnUNetTrainerLightMedSeg):
    """The paper's recipe. The warm-up is "short" in the paper; we spend 5% of the epochs on it.

    The paper anneals over T_max = 100 epochs within 300; we anneal over the whole schedule, so that
    the `_Nepochs` short schedules stay meaningful.
    """

    paper_lr = 2e-4
    paper_weight_decay = 1e-5
    paper_min_lr = 1e-9
    paper_warmup_fraction = 0.05

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        # Refused before nnU-Net makes the fold folder and its log.
        labels = PlansManager(plans).get_label_manager(dataset_json)
        if labels.has_regions or labels.has_ignore_label:
            raise UnsupportedConfigurationError(
                f"{type(self).__name__}: the paper's loss takes plain labels, but this dataset has "
                f"{'regions' if labels.has_regions else 'an ignore label'}. "
                f"Train with nnUNetTrainerLightMedSeg (nnU-Net's loss) instead.")
        super().__init__(plans, configuration, fold, dataset_json, device)

    def _build_loss(self):
        loss = LightMedSegLoss()
        if self.enable_deep_supervision:
            scales = self._get_deep_supervision_scales()
            weights = [1 / 2 ** i for i in range(len(scales))]
            loss = DeepSupervisionWrapper(loss, [w / sum(weights) for w in weights])
        return loss
