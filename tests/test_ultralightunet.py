import pytest
import torch
from torch import nn

from nnunet_lightseg import registry
from nnunet_lightseg.architectures.ultralightunet import VARIANT_CHANNELS, UltraLightUNet, channel_shuffle

PAPER_2D = {"T": 0.027e6, "S": 0.093e6, "base": 0.316e6, "M": 1.15e6, "L": 3.76e6}
PAPER_3D = {"T": 0.061e6, "S": 0.163e6, "base": 0.453e6, "M": 1.42e6, "L": 4.28e6}


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("variant", list(VARIANT_CHANNELS))
def test_parameter_counts_match_the_paper_within_5_percent(variant):
    name = "UltraLightUNet" if variant == "base" else f"UltraLightUNet_{variant}"
    spec = registry.get(name)
    net2d = spec.create(3, 1, dim=2)
    net3d = spec.create(1, 1, dim=3)
    assert n_params(net2d) == pytest.approx(PAPER_2D[variant], rel=0.05)
    assert n_params(net3d) == pytest.approx(PAPER_3D[variant], rel=0.05)


@pytest.mark.parametrize("steps, patch", [
    ([(2, 2, 2)] * 3, (40, 56, 40)),              # Hippocampus 3d_fullres: three steps for five stages
    ([(1, 2, 2), (2, 2, 2), (2, 2, 2)], (20, 28, 20)),  # anisotropic
    ([(2, 2, 2)] * 5, (19, 29, 31)),              # not divisible by the total stride
    ([(2, 2)] * 4, (56, 40)),                     # Hippocampus 2d
])
def test_shapes_with_and_without_deep_supervision(steps, patch):
    dim = len(patch)
    net = registry.get("UltraLightUNet_T").create(2, 3, dim=dim, plan_steps=steps, deep_supervision=True)
    x = torch.randn(2, 2, *patch)  # batch norm needs two values per channel at a 1-voxel bottleneck
    outputs = net(x)
    assert len(outputs) == len(net.output_strides) == 4
    for out, stride in zip(outputs, net.output_strides):
        assert out.shape == (2, 3, *[round(p / s) for p, s in zip(patch, stride)])
    net.deep_supervision = False
    assert net(x).shape == (2, 3, *patch)


def test_parameter_set_does_not_depend_on_deep_supervision():
    spec = registry.get("UltraLightUNet")
    on = spec.create(1, 2, dim=3, plan_steps=[(2, 2, 2)] * 3, deep_supervision=True)
    off = spec.create(1, 2, dim=3, plan_steps=[(2, 2, 2)] * 3, deep_supervision=False)
    off.load_state_dict(on.state_dict(), strict=True)


@pytest.mark.parametrize("dim", [2, 3])
def test_gradients_reach_every_parameter(dim):
    net = registry.get("UltraLightUNet_T").create(2, 2, dim=dim, deep_supervision=True)
    patch = (32,) * dim
    outputs = net(torch.randn(2, 2, *patch))
    sum(o.square().mean() for o in outputs).backward()
    assert not [n for n, p in net.named_parameters() if p.grad is None]
    # A conv bias right before batch norm gets an exactly zero gradient (GAG's psi, Eq. 5); ReLU
    # units can be silent on one random batch. Everything else must learn.
    silent = [n for n, p in net.named_parameters() if not torch.any(p.grad != 0)]
    assert len(silent) <= 0.05 * len(list(net.parameters())), silent


@pytest.mark.parametrize("name, has_cmfa, has_gag", [("UltraLightUNet_MKIROnly", False, False),
                                                     ("UltraLightUNet_MKIR_GAG", False, True),
                                                     ("UltraLightUNet_MKIR_MKIRA", True, False)])
def test_ablations_remove_their_components(name, has_cmfa, has_gag):
    keys = registry.get(name).create(1, 2, dim=3).state_dict().keys()
    assert any("channel_attention" in k for k in keys) == has_cmfa
    assert any(".gag." in k for k in keys) == has_gag
    full = registry.get("UltraLightUNet").create(1, 2, dim=3)
    assert n_params(registry.get(name).create(1, 2, dim=3)) < n_params(full)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_mismatched_strides_are_refused_clearly():
    with pytest.raises(ValueError, match="five stages"):
        UltraLightUNet(1, 2, strides=((2, 2, 2),) * 4)
    with pytest.raises(ValueError, match="do not match"):
        UltraLightUNet(1, 2, strides=((2, 2),) * 5, conv_op=nn.Conv3d)
