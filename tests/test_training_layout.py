"""CPU training layout (trainers/training_layout.py): channels-last weights and batches, same maths."""
import pytest
import torch

from nnunet_lightseg import registry
from nnunet_lightseg.memory_layout import channels_last_weights
from nnunet_lightseg.trainers import training_layout

SHAPE = (2, 2, 16, 24, 16)


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.get(name).create(registry.Plan(2, 3, SHAPE[2:], [(2, 2, 2)] * 3, deep_supervision=True))


def test_channels_last_weights_keep_parameters_and_values():
    network = build("UltraLightUNet")
    parameters = list(network.parameters())
    state = {k: v.clone() for k, v in network.state_dict().items()}
    channels_last_weights(network, 5)
    assert list(network.parameters()) == parameters
    assert all(torch.equal(network.state_dict()[k], v) for k, v in state.items())
    assert network.head.weight.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("name,input_batches", [("UltraLightUNet", True), ("VeloxSeg", True), ("LightMedSeg", False)])
def test_channels_last_batches_only_where_the_table_says(monkeypatch, name, input_batches):
    # float64: train-mode batch norm over a few voxels amplifies float32 rounding of the other layout
    network, reference = build(name).train().double(), build(name).train().double()
    monkeypatch.setitem(training_layout.CHANNELS_LAST_TRAINING, type(network), input_batches)
    seen = []
    assert training_layout.apply_training_memory_format(network, 5)
    network.register_forward_pre_hook(lambda m, args: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last_3d)))
    x = torch.randn(*SHAPE, dtype=torch.float64)
    outputs = []
    for net in (network, reference):
        torch.manual_seed(1)  # the same draws for any dropout in training
        outputs.append(net(x))
    torch.testing.assert_close(*outputs)  # a layout only
    assert seen == [input_batches]
    assert network.state_dict().keys() == reference.state_dict().keys()


def test_a_one_channel_batch_gets_channels_last_strides():
    """A one-channel batch is contiguous in both layouts, so `.contiguous(memory_format=...)` keeps its
    default strides and oneDNN runs the first conv channels-first (1.2-1.7x slower training steps on
    Hippocampus, docs/performance.md); the hook gives it explicit channels-last strides."""
    torch.manual_seed(0)
    network = registry.get("LightMedSeg").create(registry.Plan(1, 3, SHAPE[2:], [(2, 2, 2)] * 3)).train()
    assert training_layout.apply_training_memory_format(network, 5)
    strides = []
    network.register_forward_pre_hook(lambda m, args: strides.append(args[0].stride()))
    network(torch.randn(2, 1, *SHAPE[2:]))
    assert strides[0][1] == 1


def test_baselines_keep_their_layout():
    network = build("MonaiResUNet")
    assert not training_layout.apply_training_memory_format(network, 5)
    assert not any(p.ndim == 5 and p.is_contiguous(memory_format=torch.channels_last_3d)
                   and not p.is_contiguous() for p in network.parameters())
