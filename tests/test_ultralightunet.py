"""UltraLightUNet: plan fitting, ablations, channel shuffle (the registry-wide contract is in test_registry_contract.py)."""
import pytest
import torch
from torch import nn

from nnunet_lightseg import registry
from nnunet_lightseg.architectures.ultralightunet import UltraLightUNet, channel_shuffle


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name, has_cmfa, has_gag", [("UltraLightUNet_MKIROnly", False, False),
                                                     ("UltraLightUNet_MKIR_GAG", False, True),
                                                     ("UltraLightUNet_MKIR_MKIRA", True, False)])
def test_ablations_remove_their_components(name, has_cmfa, has_gag):
    keys = registry.get(name).create(registry.Plan(1, 2, (32, 32, 32))).state_dict().keys()
    assert any("channel_attention" in k for k in keys) == has_cmfa
    assert any(".gag." in k for k in keys) == has_gag
    full = registry.get("UltraLightUNet").create(registry.Plan(1, 2, (32, 32, 32)))
    assert n_params(registry.get(name).create(registry.Plan(1, 2, (32, 32, 32)))) < n_params(full)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_mismatched_strides_are_refused_clearly():
    with pytest.raises(ValueError, match="five stages"):
        UltraLightUNet(1, 2, strides=((2, 2, 2),) * 4)
    with pytest.raises(ValueError, match="do not match"):
        UltraLightUNet(1, 2, strides=((2, 2),) * 5, conv_op=nn.Conv3d)
