"""DALight-3D trainers (3d_fullres and the cascade's 3d stages; `2d` is refused), derived from the registry.

`nnUNetTrainer<M>` for every registered DALight-3D model M (the default and its four component
ablations) uses nnU-Net's recipe; `nnUNetTrainer<M>_Paper` the paper's (../shared/specs/dalight3d.md:
AdamW lr 5e-5, weight decay 1e-5, cosine to 1e-6, batch 1, Dice + 0.5 CE, full precision, 50 epochs).
Every trainer sets the network's ICN identifiers from dataset.json's `channel_names`; the network
keeps them in a buffer, so the checkpoint carries them to nnU-Net's predictor.
"""
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from nnunet_lightseg.architectures.dalight3d import identifiers_for_channels
from nnunet_lightseg.trainers.base import LightSegTrainer, registry_trainers, unwrap
from nnunet_lightseg.trainers.precision import FullPrecisionTraining
from nnunet_lightseg.trainers.recipes import PaperRecipe


def channel_identifiers(dataset_json: dict, num_input_channels: int) -> list[int]:
    """ICN identifiers for the network's input channels, from dataset.json (`channel_names`, or the
    legacy `modality`). Input channels beyond the named ones (the cascade's one-hot segmentation of
    the previous stage) are unnamed and get the "other" slot of their position."""
    names = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    names = [names[key] for key in sorted(names, key=int)]
    return identifiers_for_channels(names + [None] * (num_input_channels - len(names)))


class DALight3DTrainer(LightSegTrainer):
    """The base of every DALight-3D trainer: sets the network's ICN identifiers after nnU-Net's initialisation."""

    def initialize(self):
        super().initialize()
        unwrap(self.network).set_channel_identifiers(channel_identifiers(self.dataset_json, self.num_input_channels))


class DALight3DPaperRecipe(FullPrecisionTraining, PaperRecipe):
    """The paper's recipe: AdamW (lr 5e-5, weight decay 1e-5) with cosine annealing to 1e-6, batch 1
    (per process), Dice + 0.5 CE, no mixed precision, no deep supervision, 50 epochs (nnU-Net epochs
    of 250 iterations).

    With batch 1, nnU-Net's fixed foreground oversampling would never pick foreground, so
    oversampling is probabilistic (each sample is foreground-centred with p = 0.33).
    """

    paper_lr = 5e-5
    paper_weight_decay = 1e-5
    paper_min_lr = 1e-6
    paper_warmup_fraction = 0.0
    paper_deep_supervision = False
    paper_epochs = 50

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.probabilistic_oversampling = True

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        self.batch_size = 1

    def _build_loss(self):
        loss = super()._build_loss()
        (loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss).weight_ce = 0.5
        return loss

globals().update(registry_trainers("DALight3D", __name__, base=DALight3DTrainer, paper_recipe=DALight3DPaperRecipe))
