"""The shared trainer base: a thin nnU-Net trainer over a registered network.

Modelled on nnU-Net's own `primus_trainers.py`: the trainer only builds the network from the plan
and tells nnU-Net what the network outputs. Planning, preprocessing, data augmentation, the loss,
mixed precision, checkpointing and inference stay nnU-Net's. A subclass names its model:

    class nnUNetTrainerUltraLightUNet_M(LightSegTrainer):
        model_name = "UltraLightUNet_M"
"""
from __future__ import annotations

import os
from typing import Callable, ClassVar

import torch
from torch import nn
from torch._dynamo import OptimizedModule

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_lightseg import cpu_inference, registry
from nnunet_lightseg.errors import UsageError
from nnunet_lightseg.nnunet_env import SAVE_EVERY_VARIABLE
from nnunet_lightseg.schedules import ITERATIONS_VARIABLE, VAL_ITERATIONS_VARIABLE
from nnunet_lightseg.trainers.input_channels import InputChannelCheck
from nnunet_lightseg.trainers.training_layout import apply_training_memory_format


def _positive_int_from_env(variable: str) -> int | None:
    """A variable of SettingsFromEnvironment as a number; None when unset."""
    value = os.environ.get(variable)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        advice = ("" if variable == SAVE_EVERY_VARIABLE else
                  " and name the schedule instead (<trainer>_<E>epochs_<I>iters, docs/training.md)")
        raise UsageError(f"{variable}={value!r} is not a positive whole number: set it to, e.g., 5, or unset it"
                         f"{advice}.")
    return number


def unwrap(network: nn.Module) -> nn.Module:
    """The plain network inside DDP and torch.compile wrappers."""
    if isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


class SettingsFromEnvironment:
    """Mixin for nnU-Net trainers: what the environment may set without changing the recipe.

    - Iterations per epoch from the deprecated NNUNET_LIGHTSEG_ITERATIONS and
      NNUNET_LIGHTSEG_VAL_ITERATIONS when set, nnU-Net's 250 / 50 otherwise. A schedule name with
      `_<I>iters` (docs/training.md) sets them after this and wins; the variables remain for runs
      named without it (`_<E>epochs` folders of earlier versions resume with `--c`).
    - How often checkpoint_latest.pth is written, from SAVE_EVERY_VARIABLE (nnU-Net: every 50
      epochs): a cluster task that is requeued resumes from it (`benchmark --save-every`).
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # Read (and refused when malformed) before nnU-Net makes the fold folder and its log.
        iterations, val_iterations, save_every = map(_positive_int_from_env, (ITERATIONS_VARIABLE,
                                                                              VAL_ITERATIONS_VARIABLE,
                                                                              SAVE_EVERY_VARIABLE))
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = iterations or self.num_iterations_per_epoch
        self.num_val_iterations_per_epoch = val_iterations or self.num_val_iterations_per_epoch
        self.save_every = save_every or self.save_every


class AtomicCheckpoints:
    """Mixin for nnU-Net trainers: a checkpoint is written beside its name, then renamed into place.

    nnU-Net's `save_checkpoint` writes straight into checkpoint_latest.pth, so a task killed while
    writing it (a SLURM time limit, `scancel`, pre-emption) leaves a truncated file, and `--c` then
    fails with "EOFError: Ran out of input". Renamed into place (os.replace is atomic on one file
    system), the previous checkpoint stays whole until the new one is.
    """

    def save_checkpoint(self, filename) -> None:
        if isinstance(filename, str):
            write_then_rename(filename, super().save_checkpoint)
        else:  # a buffer (VeloxSeg collects nnU-Net's checkpoint in memory, then writes it with this rule)
            super().save_checkpoint(filename)


def write_then_rename(filename: str, write: Callable[[str], None]) -> None:
    """`write(filename + ".partial")`, then rename that file over `filename` if it was written."""
    partial = filename + ".partial"
    write(partial)
    if os.path.isfile(partial):  # nnU-Net writes nothing off rank 0 or with checkpointing disabled
        os.replace(partial, filename)


class LightSegTrainer(SettingsFromEnvironment, AtomicCheckpoints, nnUNetTrainer):
    """nnU-Net's recipe (SGD, poly LR, Dice + CE, deep supervision) over a registered network.

    Short schedules are named: `_<E>epochs_<I>iters` on any trainer name (e.g.
    nnUNetTrainerUltraLightUNet_5epochs_20iters; docs/training.md).
    """

    model_name: ClassVar[str] = ""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # Fail now, before nnU-Net makes the fold folder and its log, if the network cannot serve this configuration.
        self.check_configuration(PlansManager(plans).get_configuration(configuration))
        super().__init__(plans, configuration, fold, dataset_json, device)
        if not self.model_spec().deep_supervision:
            self.enable_deep_supervision = False

    @classmethod
    def model_spec(cls) -> registry.ModelSpec:
        return registry.get(cls.model_name)

    @classmethod
    def check_configuration(cls, configuration_manager: ConfigurationManager) -> None:
        """Raise UnsupportedConfigurationError (the registry's message) if the network cannot be built
        for this configuration."""
        cls.model_spec().check(registry.Plan.from_configuration(configuration_manager, 1, 1))

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """Build the network from the plan: channels, patch size and per-axis strides.

        Called on the class by nnU-Net's predictor too; the parameter set does not depend on
        `enable_deep_supervision`, so checkpoints load strictly. The network checks the channels of
        its input before it runs (`input_channels`), and predicts on a CPU through the inference
        engine (`cpu_inference`; the state_dict is unchanged).
        """
        spec = cls.model_spec()
        network = spec.create(registry.Plan.from_configuration(configuration_manager, num_input_channels,
                                                               num_output_channels,
                                                               enable_deep_supervision and spec.deep_supervision))
        network.register_forward_pre_hook(InputChannelCheck(num_input_channels, plans_manager.dataset_name,
                                                            cls.__name__, plans_manager.plans_name))
        return cpu_inference.enable(network)

    def initialize(self):
        """nnU-Net's initialisation; on CPU, conv weights (and input batches) then go channels-last
        where the network trains faster so (`training_layout`; same maths, same state_dict keys)."""
        super().initialize()
        network = unwrap(self.network)
        if self.device.type == "cpu":
            apply_training_memory_format(network, len(self.configuration_manager.patch_size) + 2)

    def _get_deep_supervision_scales(self):
        """The scales of the outputs the network really produces (not the plan's pooling steps)."""
        if not self.enable_deep_supervision:
            return None
        network = self.network if self.network is not None else self.build_network_architecture(
            self.plans_manager, self.configuration_manager, 1, 1, True)
        return [[1.0 / s for s in stride] for stride in unwrap(network).output_strides]

    def set_deep_supervision_enabled(self, enabled: bool):
        if self.model_spec().deep_supervision:
            unwrap(self.network).deep_supervision = enabled


def registry_trainers(family: str, module: str, base: type = LightSegTrainer,
                      paper_recipe: type | None = None) -> dict[str, type]:
    """The trainers of every registered model of `family`, derived from the registry.

    For each model M: `nnUNetTrainer<M>`, `base` with `model_name = M` (nnU-Net's recipe), and with
    `paper_recipe`, `nnUNetTrainer<M>_Paper`, the recipe mixed in before it. A family module puts
    them in its globals (`globals().update(...)`), where `trainers/__init__` exports them for
    nnU-Net's trainer search; `module` is that module's name, so that pickling finds them.
    """
    made = {}
    for spec in registry.all_specs():
        if spec.family != family:
            continue
        name = f"nnUNetTrainer{spec.name}"
        default = type(name, (base,), {"model_name": spec.name, "__module__": module, "__qualname__": name,
                                       "__doc__": f"{spec.name} ({spec.description}) under nnU-Net's recipe."})
        made[name] = default
        if paper_recipe is not None:
            paper = f"{name}_Paper"
            made[paper] = type(paper, (paper_recipe, default), {
                "__module__": module, "__qualname__": paper,
                "__doc__": f"{spec.name} under its paper's recipe ({paper_recipe.__name__})."})
    return made
