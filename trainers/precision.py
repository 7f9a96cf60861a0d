"""Training in float32 on CUDA, for the networks that do not train under nnU-Net's float16 mixed precision.

nnU-Net's train and validation steps enter `autocast(device, enabled=True)` on CUDA and scale the
loss with a GradScaler. `FullPrecisionTraining` keeps those steps as they are: the network's own
forward leaves autocast (`run_in_full_precision`) and no GradScaler is made, so the network, its
gradients and the loss compute in float32. On a CPU nnU-Net uses neither, and nothing changes.
Users: DALight-3D's paper recipe (the paper trains without mixed precision) and UltraLightUNet
(docs/architectures/ultralightunet.md, "Precision").
"""
import torch
from torch import nn

from nnunet_lightseg.trainers.base import unwrap


def run_in_full_precision(network: nn.Module) -> None:
    """Run `network`'s forward with autocast disabled, whatever context calls it.

    A forward pre-hook enters a disabled autocast for the network's own forward and a forward hook
    leaves it (also when the forward raises), so the network computes in float32 while nnU-Net's
    steps and module globals stay as they are. The loss of float32 logits is float32 under autocast too.
    """
    entered = []

    def enter(module, args):
        context = torch.autocast(args[0].device.type, enabled=False)
        context.__enter__()
        entered.append(context)

    def leave(module, args, output):
        entered.pop().__exit__(None, None, None)

    network.register_forward_pre_hook(enter)
    network.register_forward_hook(leave, always_call=True)


class FullPrecisionTraining:
    """Mixin for nnU-Net trainers: no GradScaler, and the network's forward in float32 under autocast."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.grad_scaler = None

    def initialize(self):
        super().initialize()
        run_in_full_precision(unwrap(self.network))
