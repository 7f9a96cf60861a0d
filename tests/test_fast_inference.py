"""The CPU inference fast path (architectures/fast_inference.py) computes what the plain graph does."""
import pytest
import torch

from nnunet_lightseg import registry
from nnunet_lightseg.architectures import fast_inference
from nnunet_lightseg.architectures.fast_inference import ENVIRONMENT_VARIABLE, cached_copy, plain_path

# (model, dim, input shape): every default paper model, on small patches with a plan of three 2x steps.
MODELS = [("UltraLightUNet", 2, (1, 2, 32, 40)), ("UltraLightUNet", 3, (1, 2, 16, 24, 16)),
          ("VeloxSeg", 3, (1, 2, 16, 24, 16)), ("LightMedSeg", 3, (1, 2, 16, 24, 16)),
          ("DALight3D", 3, (1, 2, 16, 24, 16))]


def build(name: str, dim: int, shape) -> torch.nn.Module:
    """The network with random weights and random batch-norm statistics, in eval mode."""
    torch.manual_seed(0)
    network = registry.get(name).create(registry.Plan(shape[1], 3, shape[2:], [(2,) * dim] * 3))
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return network.eval()


def assert_close(fast: torch.Tensor, plain: torch.Tensor) -> None:
    assert fast.shape == plain.shape and fast.is_contiguous()
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4 * float(plain.abs().max()))


@pytest.mark.parametrize("name,dim,shape", MODELS, ids=[f"{m}-{d}d" for m, d, _ in MODELS])
def test_fast_path_matches_plain_path(name, dim, shape):
    network = build(name, dim, shape)
    state = {k: v.clone() for k, v in network.state_dict().items()}
    x = torch.randn(shape)
    with torch.inference_mode():
        with plain_path():
            plain = network(x)
        fast = network(x)
    assert cached_copy(network) is not None  # on by default in eval mode under inference_mode
    assert_close(fast, plain)
    after = network.state_dict()  # checkpoints stay ordinary: same keys, untouched values
    assert list(after) == list(state) and all(torch.equal(after[k], v) for k, v in state.items())


def test_only_in_eval_mode_without_gradients():
    network = build("UltraLightUNet", 3, MODELS[1][2])
    x = torch.randn(MODELS[1][2])
    network(x)  # eval mode, gradients on
    assert cached_copy(network) is None
    with torch.no_grad():
        network.train()(x)
        assert cached_copy(network) is None
        network.eval()(x)
        assert cached_copy(network) is not None
        network.train()
        assert cached_copy(network) is None


def test_switched_off_by_environment_variable(monkeypatch):
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "0")
    network = build("UltraLightUNet", 2, MODELS[0][2])
    with torch.inference_mode():
        network(torch.randn(MODELS[0][2]))
    assert not fast_inference.enabled() and cached_copy(network) is None


def test_rebuilt_after_load_state_dict_and_parameter_changes():
    shape = MODELS[0][2]
    network, other = build("UltraLightUNet", 2, shape), build("UltraLightUNet", 2, shape)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    x = torch.randn(shape)
    with torch.inference_mode():
        network(x)
        first = cached_copy(network)
        network.load_state_dict(other.state_dict())
        assert cached_copy(network) is None
        assert_close(network(x), other(x))
        with plain_path():
            assert_close(network(x), other(x))
        second = cached_copy(network)
        assert second is not first
        network.load_state_dict(other.state_dict())  # the same weights again, as nnU-Net's predictor does
        assert cached_copy(network) is None
        network(x)
        assert cached_copy(network) is second
        with torch.no_grad():
            next(network.parameters()).add_(0.1)  # an in-place edit bumps the version counter
        fast = network(x)
        assert cached_copy(network) not in (None, second)
        with plain_path():
            assert_close(fast, network(x))


def test_deep_supervision_toggle_reaches_the_copy():
    shape = MODELS[1][2]
    network = build("UltraLightUNet", 3, shape)
    x = torch.randn(shape)
    with torch.inference_mode():
        assert torch.is_tensor(network(x))
        network.deep_supervision = True
        fast = network(x)
        with plain_path():
            plain = network(x)
    assert len(fast) == len(plain) == 4
    for f, p in zip(fast, plain):
        assert_close(f, p)


def test_channels_last_weights_keep_parameters_and_values():
    network = build("UltraLightUNet", 3, MODELS[1][2])
    parameters = list(network.parameters())
    state = {k: v.clone() for k, v in network.state_dict().items()}
    fast_inference.channels_last_weights(network, 5)
    assert list(network.parameters()) == parameters
    assert all(torch.equal(network.state_dict()[k], v) for k, v in state.items())
    assert network.head.weight.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("name,input_layout", [("UltraLightUNet", "channels_last"), ("VeloxSeg", "channels_last"),
                                               ("LightMedSeg", "contiguous")])
def test_training_layout_feeds_channels_last_batches_only_where_chosen(name, input_layout):
    # float64: train-mode batch norm over a few voxels amplifies float32 rounding of the other layout
    network = build(name, 3, MODELS[1][2]).train().double()
    network.training_input_memory_format = input_layout
    reference = build(name, 3, MODELS[1][2]).train().double()
    seen = []
    assert fast_inference.apply_training_memory_format(network, 5)
    network.register_forward_pre_hook(lambda m, args: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last_3d)))
    x = torch.randn(2, 2, 16, 24, 16, dtype=torch.float64)
    outputs = []
    for net in (network, reference):
        torch.manual_seed(1)  # the same draws for any dropout in training
        outputs.append(net(x))
    torch.testing.assert_close(*outputs)  # a layout only
    assert seen == [input_layout == "channels_last"]
    assert network.state_dict().keys() == reference.state_dict().keys()
