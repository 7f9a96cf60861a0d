"""Experiment trainers for issue 11 (not part of the package), for an nnUNet_extTrainer folder.

LMS<variant>_seed<S>: LightMedSeg with another normalised-conv gain and/or the plan's missing step at
the stem (full-resolution stem), or (LMSmod01) its FiLM and position-bias projections drawn at std 0.1
instead of 0.01; DALHe_seed<S>: DALight-3D with nnU-Net's
InitWeights_He(1e-2) instead of PyTorch's defaults; DALHeGain_seed<S>: the same, then every conv whose
output a GroupNorm or ICN normalises at 0.1 x (the NORMALISED_CONV_INIT_GAIN rule of architectures/initialisation.py); LMSenc_seed<S>:
LightMedSeg with its encoder's GhostConv primaries, 1x1 smooth paths and bottleneck also at 0.1 x; FP32_<trainer>: the trainer without autocast and
GradScaler. Tenth session: LMSup_seed<S> (decoder transposed convs at He for their true fan-in),
LMSupse_seed<S> (that and every SE gate starting near open), LMSsedg2_seed<S> (SE gates near open and
the decoder branches' GroupNorm scale at 2), LMSdg3_seed<S> (that scale at 3 alone: what ships since).
Every LightMedSeg experiment of before that change builds its decoder GroupNorms at scale 1, as it ran."""
import math
import os

import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as _nnunet_trainer_module
import torch
from dynamic_network_architectures.initialization.weight_init import InitWeights_He

import nnunet_lightseg.architectures.initialisation as _initialisation
import nnunet_lightseg.architectures.lightmedseg as _lightmedseg
import nnunet_lightseg.trainers as _trainers
import nnunet_lightseg.zoo.lightmedseg as _zoo
from nnunet_lightseg.architectures.blocks.squeeze_excitation import SqueezeExcitation

_SCHED = os.environ.get("SCHED", "_14epochs_25iters")
_made = {}


def _rebuilding(name, base, before=lambda: None, after=lambda network: None):
    """`base` whose build_network_architecture calls `before()` first and `after(network)` on its result."""
    def build(cls, plans_manager, configuration_manager, num_input_channels, num_output_channels,
              enable_deep_supervision=True):  # named so that nnU-Net picks its new calling convention
        before()
        network = super(made, cls).build_network_architecture(plans_manager, configuration_manager,
                                                              num_input_channels, num_output_channels,
                                                              enable_deep_supervision)
        after(network)
        return network
    made = type(name, (base,), {"build_network_architecture": classmethod(build), "__module__": __name__})
    return made


def _lms_variant(name, base, gain=None, stride_one_at=None, modulation_std=None, decoder_scale=1.0, after=()):
    """LightMedSeg built with other module settings, then `after`'s steps applied in order. The decoder
    GroupNorms start at `decoder_scale` (1: as every experiment before the tenth session's change,
    db85f87, ran)."""
    def before():
        _lightmedseg.DECODER_NORM_INIT_SCALE = decoder_scale
        if modulation_std is not None:
            _lightmedseg.MODULATION_INIT_STD = modulation_std
        if gain is not None:
            _initialisation.NORMALISED_CONV_INIT_GAIN = gain
        if stride_one_at is not None:
            _zoo.STRIDE_ONE_AFTER_STEM = stride_one_at

    def apply(network):
        for step in after:
            step(network)
    return _rebuilding(name, base, before=before, after=apply)


def _he(name, base):
    return _rebuilding(name, base, after=lambda network: network.apply(InitWeights_He(1e-2)))


def _he_gain(name, base):
    """DALight-3D's shipped initialisation (`DALight3D.initialise`: He, normalised convs at 0.1 x) drawn
    once more after construction; the run of 2026-12-01 drew it over PyTorch's defaults, the same
    34 convs (checked), before DALight-3D shipped with it."""
    return _rebuilding(name, base, after=lambda network: network.initialise())


def _encoder_gain(network, gain=0.1):
    """LightMedSeg's encoder's unnormalised convs (each stage's GhostConv primary and 1x1 smooth path)
    and the bottleneck at `gain` x their initialisation."""
    with torch.no_grad():
        for stage in network.encoder:
            stage.project.primary.weight.mul_(gain)
            stage.smooth.weight.mul_(gain)
        network.bottleneck.weight.mul_(gain)


def _transposed_fan_in(network):
    """He at each decoder transposed conv's true fan-in (C_in x kernel volume / stride volume) instead
    of the C_out x kernel volume that `InitWeights_He` reads from its weight's shape."""
    with torch.no_grad():
        for stage in network.decoder:
            weight = stage.up.weight
            weight.mul_(math.sqrt(weight.shape[1] * math.prod(stage.up.stride) / weight.shape[0]))


def _se_open(network, bias=2.0):
    """Every SE gate starts near open (fc2 bias 2: sigmoid 0.88) instead of at 1/2."""
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, SqueezeExcitation):
                module.fc2.bias.fill_(bias)


_LMS = {"LMSgain003": dict(gain=0.03), "LMSfullstem": dict(stride_one_at=0),
        "LMSgain003fullstem": dict(gain=0.03, stride_one_at=0), "LMSmod01": dict(modulation_std=0.1),
        "LMSenc": dict(after=[_encoder_gain]), "LMSup": dict(after=[_transposed_fan_in]),
        "LMSupse": dict(after=[_transposed_fan_in, _se_open]),
        "LMSsedg2": dict(decoder_scale=2.0, after=[_se_open]), "LMSdg3": dict(decoder_scale=3.0)}


def _fp32(name, base):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.grad_scaler = None
        _nnunet_trainer_module.autocast = lambda device_type, enabled=True, **kw: torch.autocast(device_type, enabled=False)
    return type(name, (base,), {"__init__": __init__, "__module__": __name__})


def __getattr__(name):
    if name in _made:
        return _made[name]
    if name.startswith("FP32_"):
        _made[name] = _fp32(name, getattr(_trainers, name[5:]))
    elif name.startswith("DALHeGain_seed"):
        _made[name] = _he_gain(name, getattr(_trainers, f"nnUNetTrainerDALight3D{_SCHED}_seed{name.split('_seed')[1]}"))
    elif name.startswith("DALHe_seed"):
        _made[name] = _he(name, getattr(_trainers, f"nnUNetTrainerDALight3D{_SCHED}_seed{name.split('_seed')[1]}"))
    elif name.split("_seed")[0] in _LMS:
        variant, seed = name.split("_seed")
        _made[name] = _lms_variant(name, getattr(_trainers, f"nnUNetTrainerLightMedSeg{_SCHED}_seed{seed}"), **_LMS[variant])
    else:
        raise AttributeError(name)
    return _made[name]
