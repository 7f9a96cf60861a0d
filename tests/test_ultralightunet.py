"""UltraLightUNet: plan fitting, ablations, channel shuffle (the registry-wide contract is in test_registry_contract.py)."""
import pytest
import torch
from torch import nn

from nnunet_lightseg import registry
from nnunet_lightseg.architectures.ultralightunet import MKIR, AttentionGate, UltraLightUNet, channel_shuffle


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


def blocks(name, kind):
    return [m for m in registry.get(name).create(registry.Plan(1, 2, (32, 32, 32))).modules() if isinstance(m, kind)]


def test_irb_is_mobilenet_v2s_block_in_place_of_mkir():
    # Tables 4 and 6: one 3-kernel depthwise conv, no channel shuffle, no CMFA, no GAG
    irbs = blocks("UltraLightUNet_IRB", MKIR)
    assert len(irbs) == 10 and all(b.shuffle_groups == 1 and len(b.mkdc.branches) == 1 for b in irbs)
    assert all(b.mkdc.branches[0][0].kernel_size == (3, 3, 3) for b in irbs)
    assert not blocks("UltraLightUNet_IRB", AttentionGate) and not any(
        "attention" in k for k in registry.get("UltraLightUNet_IRB").create(registry.Plan(1, 2, (32,) * 3)).state_dict())


def test_encoder_mkira_adds_cmfa_before_each_encoder_mkir_and_ag_replaces_gag():
    keys = registry.get("UltraLightUNet_EncoderMKIRA").create(registry.Plan(1, 2, (32, 32, 32))).state_dict()
    assert {k.split(".")[1] for k in keys if k.startswith("encoder_cmfa.")} == {"0", "1", "2", "3", "4"}
    default = registry.get("UltraLightUNet").create(registry.Plan(1, 2, (32, 32, 32))).state_dict()
    assert not any(k.startswith("encoder_cmfa") for k in default)  # trained checkpoints keep their keys
    gates = blocks("UltraLightUNet_AG", AttentionGate)
    assert len(gates) == 4 and all(g.w_g[0].kernel_size == (1, 1, 1) for g in gates)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_mismatched_strides_are_refused_clearly():
    with pytest.raises(ValueError, match="five stages"):
        UltraLightUNet(1, 2, strides=((2, 2, 2),) * 4)
    with pytest.raises(ValueError, match="do not match"):
        UltraLightUNet(1, 2, strides=((2, 2),) * 5, conv_op=nn.Conv3d)
