"""The CPU inference engine (nnunet_lightseg/cpu_inference.py) computes what the plain graph does,
builds one copy per set of weights, and leaves the networks and their checkpoints as they are."""
import copy
import logging
import pathlib

import pytest
import torch

from nnunet_lightseg import cpu_inference, registry
from nnunet_lightseg.cpu_inference import ENVIRONMENT_VARIABLE, copies_built, plain_path

# (model, dim, input shape): every default paper model, on small patches with a plan of three 2x steps.
MODELS = [("UltraLightUNet", 2, (1, 2, 32, 40)), ("UltraLightUNet", 3, (1, 2, 16, 24, 16)),
          ("VeloxSeg", 3, (1, 2, 16, 24, 16)), ("LightMedSeg", 3, (1, 2, 16, 24, 16)),
          ("DALight3D", 3, (1, 2, 16, 24, 16)),
          # UltraLightUNet's ablations with other blocks: IRB (no shuffle), CMFA in the encoder, AG
          ("UltraLightUNet_IRB", 3, (1, 2, 16, 24, 16)), ("UltraLightUNet_EncoderMKIRA", 3, (1, 2, 16, 24, 16)),
          ("UltraLightUNet_AG", 2, (1, 2, 32, 40)),
          # one input channel (Hippocampus): contiguous in both layouts
          ("LightMedSeg", 3, (1, 1, 16, 24, 16)),
          # a batch: the block rules with per-sample anchors, routing weights and skip-fusion attention
          ("LightMedSeg", 3, (2, 2, 16, 24, 16)), ("DALight3D", 3, (2, 2, 16, 24, 16))]
IDS = [f"{m}-{d}d-{shape[1]}ch" + (f"-batch{shape[0]}" if shape[0] > 1 else "") for m, d, shape in MODELS]


def build(name: str, dim: int, shape, seed: int = 0) -> torch.nn.Module:
    """The network with random weights, biases and batch-norm statistics, engine enabled, in eval mode.

    Random biases, not the zeros of He initialisation, so that rules which move biases (the block
    rules' precomposed weights) are checked too."""
    torch.manual_seed(seed)
    network = registry.get(name).create(registry.Plan(shape[1], 3, shape[2:], [(2,) * dim] * 3))
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)) and module.bias is not None:
                module.bias.uniform_(-0.5, 0.5)
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return cpu_inference.enable(network).eval()


def assert_close(fast: torch.Tensor, plain: torch.Tensor) -> None:
    assert fast.shape == plain.shape and fast.is_contiguous()
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4 * float(plain.abs().max()))


@pytest.mark.parametrize("name,dim,shape", MODELS, ids=IDS)
def test_copy_matches_plain_graph_and_leaves_the_checkpoint_alone(name, dim, shape):
    network = build(name, dim, shape)
    plain_network = registry.get(name).create(registry.Plan(shape[1], 3, shape[2:], [(2,) * dim] * 3))
    state = {k: v.clone() for k, v in network.state_dict().items()}
    x = torch.randn(shape)
    with torch.inference_mode():
        with plain_path():
            plain = network(x)
        fast = network(x)
    assert copies_built(network) == 1  # on by default in eval mode under inference_mode
    assert_close(fast, plain)
    after = network.state_dict()  # checkpoints stay ordinary: same keys as the plain network, untouched values
    assert list(after) == list(plain_network.state_dict()) == list(state)
    assert all(torch.equal(after[k], v) for k, v in state.items())


@pytest.mark.parametrize("name,dim,shape", MODELS, ids=IDS)
def test_every_conv_and_transposed_conv_of_the_copy_leaves_torchs_generic_kernels(name, dim, shape):
    # torch runs LightMedSeg's strided 3^3 transposed convs on slow_conv_transpose3d, about twice
    # oneDNN's time; every conv of the copy is a FastConv or a FastConvTranspose
    fast = cpu_inference.build_inference_copy(build(name, dim, shape), len(shape))
    assert not [m for m in fast.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]


def test_a_one_channel_input_runs_channels_last_from_the_first_conv():
    """A one-channel batch is contiguous in both layouts and oneDNN reads its default strides as
    channels-first; the copy's input conversion gives it channels-last strides, so that no conv of
    the copy falls back to channels-first (and every later block with it)."""
    fast = cpu_inference.build_inference_copy(build("LightMedSeg", 3, MODELS[-1][2]), 5)
    layouts = []
    for module in fast.modules():
        if isinstance(module, (cpu_inference.FastConv, cpu_inference.FastConvTranspose)):
            module.register_forward_hook(lambda m, args, out: layouts.append(
                out.is_contiguous(memory_format=torch.channels_last_3d) and out.stride(1) == 1))
    with torch.inference_mode():
        cpu_inference.run_inference_copy(fast, torch.randn(MODELS[-1][2]))
    assert layouts and all(layouts)


def test_only_in_eval_mode_without_gradients():
    network = build("UltraLightUNet", 3, MODELS[1][2])
    x = torch.randn(MODELS[1][2])
    network(x)  # eval mode, gradients on
    with torch.no_grad():
        network.train()(x)
        assert copies_built(network) == 0
        network.eval()(x)
        assert copies_built(network) == 1


def test_switched_off_by_environment_variable(monkeypatch):
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "0")
    network = build("UltraLightUNet", 2, MODELS[0][2])
    with torch.inference_mode():
        network(torch.randn(MODELS[0][2]))
    assert not cpu_inference.enabled() and copies_built(network) == 0


def test_without_onednn_the_plain_graph_runs_after_one_log_line(monkeypatch, caplog):
    cpu_inference.onednn_available.cache_clear()
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    network = build("UltraLightUNet", 2, MODELS[0][2])
    try:
        with caplog.at_level(logging.WARNING, logger=cpu_inference.__name__), torch.inference_mode():
            for _ in range(3):
                network(torch.randn(MODELS[0][2]))
    finally:
        cpu_inference.onednn_available.cache_clear()
    assert copies_built(network) == 0
    assert [r.getMessage() for r in caplog.records] == [
        "nnunet-lightseg: this torch build lacks oneDNN's fused convolutions (torch.ops.mkldnn._convolution_pointwise "
        "and ._convolution_transpose_pointwise); CPU prediction runs the plain networks."]


def test_one_copy_per_fold_whatever_the_number_of_cases():
    """nnU-Net's predictor loads each fold's weights into the same network before every case."""
    shape = MODELS[0][2]
    network = build("UltraLightUNet", 2, shape)
    folds = [build("UltraLightUNet", 2, shape, seed=fold).state_dict() for fold in range(3)]
    x = torch.randn(shape)
    with torch.inference_mode():
        for _case in range(4):
            for fold, weights in enumerate(folds):
                network.load_state_dict(weights)
                with plain_path():
                    expected = network(x)
                assert_close(network(x), expected)
    assert copies_built(network) == len(folds)


def test_in_place_edits_and_the_bound_on_copies():
    shape = MODELS[0][2]
    network = build("UltraLightUNet", 2, shape)
    x = torch.randn(shape)
    with torch.inference_mode():
        network(x)
        with torch.no_grad():
            next(network.parameters()).add_(0.1)  # an in-place edit bumps the version counter
        fast = network(x)
        with plain_path():
            assert_close(fast, network(x))
        assert copies_built(network) == 2
        for _ in range(cpu_inference.MAX_COPIES + 2):
            with torch.no_grad():
                next(network.parameters()).add_(0.1)
            network(x)
    assert len(cpu_inference._ENGINES[network].copies) == cpu_inference.MAX_COPIES


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


def test_hooks_on_the_network_run_on_the_engine_path_too():
    shape = MODELS[0][2]
    network = build("UltraLightUNet", 2, shape)
    seen = []
    with torch.inference_mode():
        network(torch.randn(shape))  # the copy exists before the hook does
        network.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
        network.register_forward_hook(lambda module, args, output: seen.append(output.shape))
        network(torch.randn(shape))
    assert seen == [torch.Size(shape), torch.Size((1, 3, *shape[2:]))]


def test_a_deep_copy_of_an_enabled_network_has_its_own_copies():
    network = build("VeloxSeg", 3, MODELS[2][2])
    twin = copy.deepcopy(network)
    with torch.inference_mode():
        twin(torch.randn(MODELS[2][2]))
    assert copies_built(twin) == 1 and copies_built(network) == 0


def test_baselines_are_left_as_they_are():
    network = registry.get("MonaiResUNet").create(registry.Plan(1, 2, (16, 16, 16), [(2, 2, 2)] * 3))
    assert cpu_inference.enable(network) is network and "forward" not in vars(network)


def test_the_networks_import_no_inference_code():
    for path in (pathlib.Path(__file__).parents[1] / "architectures").rglob("*.py"):
        text = path.read_text()
        assert "cpu_inference" not in text and "fast_inference" not in text, path


@pytest.mark.parametrize("side", [8, 24], ids=["matrix-product", "onednn"])  # 512 and 13824 voxels
@pytest.mark.parametrize("channels_last", [False, True], ids=["channels-first", "channels-last"])
def test_a_1x1_conv_computes_the_conv_on_either_kernel(side, channels_last):
    torch.manual_seed(0)
    conv, activation = torch.nn.Conv3d(16, 8, 1), torch.nn.SiLU()
    fast = cpu_inference.FastConv(conv, activation)
    plain = cpu_inference.FastConv(conv)
    x = torch.randn(1, 16, side, side, side)
    out = torch.randn(1, 8, side, side, side)
    if channels_last:
        x, out = x.contiguous(memory_format=torch.channels_last_3d), out.contiguous(memory_format=torch.channels_last_3d)
    assert fast._on_onednn(x) == (channels_last and side ** 3 >= cpu_inference.ONEDNN_MIN_VOXELS)
    with torch.inference_mode():
        reference = conv(x)
        assert_close(fast(x).contiguous(), activation(reference))
        expected = out + reference
        assert_close(plain.add_to(x, out).contiguous(), expected)


# (conv, activation, split): convs split with AVX-512's 16-lane and AVX2's 8-lane output blocks alike
# (one or two output channels), in 3D, 2D and with a 1-tap axis; one that fills a block (not split).
NARROW_CONVS = [(torch.nn.Conv3d(16, 2, 3, padding=1), None, True),
                (torch.nn.Conv3d(2, 1, 7, padding=3), torch.nn.Sigmoid(), True),
                (torch.nn.Conv2d(24, 2, 3, padding=1), torch.nn.ReLU(), True),
                (torch.nn.Conv3d(24, 2, (3, 1, 3), padding=(1, 0, 1)), torch.nn.SiLU(), True),
                (torch.nn.Conv3d(8, cpu_inference.ONEDNN_OUTPUT_BLOCK, 3, padding=1), None, False)]


@pytest.mark.parametrize("conv,activation,split", NARROW_CONVS, ids=["16-2", "2-1x7", "2d-24-2", "3x1x3", "full-block"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["channels-first", "channels-last"])
def test_a_narrow_conv_computes_the_conv_from_its_taps_partial_sums(conv, activation, split, channels_last):
    torch.manual_seed(0)
    fast = cpu_inference.FastConv(conv, activation)
    assert (fast.kind == "split") == split
    x = torch.randn(2, conv.in_channels, *(9, 11, 10)[-conv.weight.ndim + 2:])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d if x.ndim == 5 else torch.channels_last)
    out = torch.randn_like(conv(x))
    with torch.inference_mode():
        reference = conv(x)
        expected = activation(reference) if activation is not None else reference
        assert_close(fast(x).contiguous(), expected)
        assert_close(fast.add_to(x, out.clone()).contiguous(), out + expected)
