"""DALight-3D trainers (3d_fullres and the cascade's 3d stages; `2d` is refused).

The default trainers use nnU-Net's recipe; `_Paper` uses the paper's (../shared/specs/dalight3d.md:
AdamW lr 5e-5, weight decay 1e-5, cosine to 1e-6, batch 1, Dice + 0.5 CE, full precision).
Every trainer sets the network's ICN identifiers from dataset.json's `channel_names`; the network
keeps them in a buffer, so the checkpoint carries them to nnU-Net's predictor.
"""
import sys
from contextlib import contextmanager

import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lightseg.architectures.dalight3d import identifiers_for_channels
from nnunet_lightseg.trainers.base import LightSegTrainer, unwrap
from nnunet_lightseg.trainers.recipes import PaperRecipe


def channel_identifiers(dataset_json: dict, num_input_channels: int) -> list[int]:
    """ICN identifiers for the network's input channels, from dataset.json (`channel_names`, or the
    legacy `modality`). Input channels beyond the named ones (the cascade's one-hot segmentation of
    the previous stage) are unnamed and get the "other" slot of their position."""
    names = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    names = [names[key] for key in sorted(names, key=int)]
    return identifiers_for_channels(names + [None] * (num_input_channels - len(names)))


class nnUNetTrainerDALight3D(LightSegTrainer):
    model_name = "DALight3D"

    def initialize(self):
        super().initialize()
        unwrap(self.network).set_channel_identifiers(channel_identifiers(self.dataset_json, self.num_input_channels))


class nnUNetTrainerDALight3D_noSepConv(nnUNetTrainerDALight3D):
    model_name = "DALight3D_noSepConv"


class nnUNetTrainerDALight3D_noICN(nnUNetTrainerDALight3D):
    model_name = "DALight3D_noICN"


class nnUNetTrainerDALight3D_noCSA(nnUNetTrainerDALight3D):
    model_name = "DALight3D_noCSA"


class nnUNetTrainerDALight3D_noSSFB(nnUNetTrainerDALight3D):
    model_name = "DALight3D_noSSFB"


@contextmanager
def autocast_disabled():
    """Full precision inside nnU-Net's `train_step` / `validation_step`.

    Those steps enter `autocast(device, enabled=True)` on CUDA, with `autocast` looked up in their
    module; for the duration of a step that name gives a disabled autocast instead.
    """
    module = sys.modules[nnUNetTrainer.__module__]
    original = module.autocast
    module.autocast = lambda device_type, *args, **kwargs: original(device_type, enabled=False)
    try:
        yield
    finally:
        module.autocast = original


class nnUNetTrainerDALight3D_Paper(PaperRecipe, nnUNetTrainerDALight3D):
    """The paper's recipe: AdamW (lr 5e-5, weight decay 1e-5) with cosine annealing to 1e-6, batch 1
    (per process), Dice + 0.5 CE, no mixed precision, no deep supervision.

    With batch 1, nnU-Net's fixed foreground oversampling would never pick foreground, so
    oversampling is probabilistic (each sample is foreground-centred with p = 0.33). The paper
    trains 50 epochs: `nnUNetTrainerDALight3D_Paper_50epochs` (nnU-Net epochs of 250 iterations).
    """

    paper_lr = 5e-5
    paper_weight_decay = 1e-5
    paper_min_lr = 1e-6
    paper_warmup_fraction = 0.0
    paper_deep_supervision = False

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.grad_scaler = None
        self.probabilistic_oversampling = True

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        self.batch_size = 1

    def _build_loss(self):
        loss = super()._build_loss()
        (loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss).weight_ce = 0.5
        return loss

    def train_step(self, batch: dict) -> dict:
        with autocast_disabled():
            return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        with autocast_disabled():
            return super().validation_step(batch)
