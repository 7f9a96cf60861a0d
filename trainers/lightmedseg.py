"""LightMedSeg trainers (`3d_fullres` and the other 3D configurations only), derived from the registry.

`nnUNetTrainer<M>` for every registered LightMedSeg model M (the default, the dense-conv and K
variants, the Table 4 ablations) uses nnU-Net's recipe; `nnUNetTrainer<M>_Paper` the paper's
(Sec. 3.7 and 4): Dice + CE + 0.5 x boundary BCE, all weighted by inverse voxel frequency; AdamW,
lr 2e-4, weight decay 1e-5, a short warm-up then cosine annealing to 1e-9; no deep supervision;
300 epochs.
"""
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_lightseg.registry import UnsupportedConfigurationError
from nnunet_lightseg.trainers.base import registry_trainers
from nnunet_lightseg.trainers.lightmedseg_loss import LightMedSegLoss
from nnunet_lightseg.trainers.recipes import PaperRecipe


class LightMedSegPaperRecipe(PaperRecipe):
    """The paper's recipe. The warm-up is "short" in the paper; we spend 5% of the epochs on it.

    The paper trains 300 epochs and anneals over T_max = 100 epochs within them; we anneal over the
    whole schedule, so that the `_Nepochs` short schedules stay meaningful (docs/architectures/lightmedseg.md).
    """

    paper_lr = 2e-4
    paper_weight_decay = 1e-5
    paper_min_lr = 1e-9
    paper_warmup_fraction = 0.05
    paper_epochs = 300

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        # Refused before nnU-Net makes the fold folder and its log.
        labels = PlansManager(plans).get_label_manager(dataset_json)
        if labels.has_regions or labels.has_ignore_label:
            raise UnsupportedConfigurationError(
                f"{type(self).__name__}: the paper's loss takes plain labels, but this dataset has "
                f"{'regions' if labels.has_regions else 'an ignore label'}. "
                f"Train with {type(self).__name__.removesuffix('_Paper')} (nnU-Net's loss) instead.")
        super().__init__(plans, configuration, fold, dataset_json, device)

    def _build_loss(self):
        loss = LightMedSegLoss()
        if self.enable_deep_supervision:
            scales = self._get_deep_supervision_scales()
            weights = [1 / 2 ** i for i in range(len(scales))]
            loss = DeepSupervisionWrapper(loss, [w / sum(weights) for w in weights])
        return loss


globals().update(registry_trainers("LightMedSeg", __name__, paper_recipe=LightMedSegPaperRecipe))
