"""VeloxSeg trainers (3d_fullres only): with SDKT (default), without it, and the paper's recipe.

SDKT (Lu et al., ICLR 2026; ../shared/specs/veloxseg.md) trains one reconstruction decoder per
modality beside the network. The decoders belong to the trainer (`self.sdkt`), not to
`self.network`: nnU-Net's predictor rebuilds the inference network with
`build_network_architecture` and loads `network_weights` strictly, so prediction never builds or
runs them. Their weights ride in the checkpoint under the extra key `sdkt_weights` (resuming with
`--c` restores them) and their parameters in a second optimizer parameter group.
"""
import io

import torch
from torch import autocast
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.utilities.helpers import dummy_context

from nnunet_lightseg.architectures.veloxseg_sdkt import SDKTTeacher, sdkt_losses
from nnunet_lightseg.trainers.base import LightSegTrainer, unwrap, write_then_rename
from nnunet_lightseg.trainers.recipes import PaperRecipe

SDKT_KEY = "sdkt_weights"


class _VeloxSegTrainer(LightSegTrainer):
    model_name = "VeloxSeg"


class nnUNetTrainerVeloxSeg_noSDKT(_VeloxSegTrainer):
    """VeloxSeg under nnU-Net's recipe, segmentation loss only."""


class nnUNetTrainerVeloxSeg(_VeloxSegTrainer):
    """VeloxSeg under nnU-Net's recipe plus the SDKT terms: loss = nnU-Net's deep-supervised Dice + CE
    + 0.5 * MSE(reconstruction, input) + 2.0 * mean Gram MSE (the paper's weights)."""

    reconstruction_weight = 0.5
    gram_weight = 2.0

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.sdkt = None  # -> initialize

    def initialize(self):
        """nnU-Net's initialize, then the reconstruction decoders as a second optimizer parameter group
        (whichever recipe built the optimizer; the schedulers set every group's learning rate)."""
        super().initialize()
        self.sdkt = SDKTTeacher(unwrap(self.network)).to(self.device)
        self.optimizer.add_param_group({"params": list(self.sdkt.parameters())})
        if self.is_ddp:
            self.sdkt = DDP(self.sdkt, device_ids=[self.local_rank])

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's train step with the SDKT terms added (features come from the same forward pass)."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        network = unwrap(self.network)
        network.return_features = True
        try:
            with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
                output, features = self.network(data)
                reconstruction, gram = sdkt_losses(self.sdkt, features, data)
                loss = self.loss(output, target) + self.reconstruction_weight * reconstruction \
                    + self.gram_weight * gram
        finally:
            network.return_features = False
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 12)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus the reconstruction decoders under `sdkt_weights`, written once.

        nnU-Net's own checkpoint goes to memory (its save_checkpoint hands the name to torch.save, which
        takes a buffer as well), gets the decoders, and is written beside `filename` and renamed over
        it (`write_then_rename`, as every trainer of ours writes): a crash at any point leaves the
        previous checkpoint whole.
        """
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)
        buffer = io.BytesIO()
        super().save_checkpoint(buffer)
        buffer.seek(0)
        checkpoint = torch.load(buffer, map_location="cpu", weights_only=False)
        checkpoint[SDKT_KEY] = unwrap(self.sdkt).state_dict()
        write_then_rename(filename, lambda path: torch.save(checkpoint, path))

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False)
        if SDKT_KEY not in checkpoint:
            raise KeyError(f"the checkpoint has no {SDKT_KEY!r} (was it written by {type(self).__name__}?); "
                           f"to continue a checkpoint without SDKT decoders use nnUNetTrainerVeloxSeg_noSDKT")
        unwrap(self.sdkt).load_state_dict(checkpoint[SDKT_KEY])


class nnUNetTrainerVeloxSeg_Paper(PaperRecipe, nnUNetTrainerVeloxSeg):
    """The paper's recipe: AdamW (lr 2.5e-4, weight decay 0.01), 300 epochs, 10 of them of linear
    warm-up, then cosine to 6e-6; Dice + CE on every output with equal weights, 0.5 reconstruction
    MSE, 2.0 Gram MSE. The paper's batch (2 x 2) and 96^3 patch are not applied: nnU-Net's plan
    decides both (docs/architectures/veloxseg.md)."""

    paper_lr = 2.5e-4
    paper_weight_decay = 0.01
    paper_min_lr = 6e-6
    paper_warmup_fraction = 10 / 300
    paper_deep_supervision = True
    paper_epochs = 300

    def _build_loss(self):
        loss = super()._build_loss()
        if isinstance(loss, DeepSupervisionWrapper):
            loss.weight_factors = (1.0,) * len(loss.weight_factors)
        return loss
