"""How far nnU-Net's training signal reaches into a network at initialisation.

    OMP_NUM_THREADS=1 python -m nnunet_lightseg.measure.gradient_flow

One forward/backward pass of nnU-Net's deep-supervised Dice + CE (its loss, its weights: 1/2^i
per output, the coarsest 0) on a small synthetic batch: 2 x 1 x 32^3 with a 4^3 foreground cube
of each of two classes (about 1% of the voxels), Hippocampus-like strides. Per network:

- `depth_ratio`: the gradient RMS per element at the deepest feature map (the output of the
  module named in DEEPEST_FEATURES) divided by the gradient RMS per element at the
  full-resolution logits. A network whose signal dies on the way
  down has a ratio near 0; nnU-Net's own PlainConvUNet is the reference.
- `relative_update`: the median over conv weights of |grad| / |weight|, what one SGD step moves a
  weight relative to its size (before the learning rate).
- `readout_rms` and `readout_update`: the RMS of the features the full-resolution head reads (the
  module named in READOUT) and its weight's |grad| / |weight|. The head's weight gradient scales
  with its input, so a network whose last decoder stage starts small learns its readout slowly.

`gradient_flow` is the function behind tests/test_registry_contract.py's gradient test and
docs/training.md's table of initialisation figures.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

NUM_CLASSES = 3  # background and two foreground classes, as Hippocampus


@dataclass(frozen=True)
class GradientFlow:
    depth_ratio: float  # gradient RMS at the deepest conv outputs / at the logits
    relative_update: float  # median |grad| / |weight| over conv weights
    readout_rms: float  # RMS of the full-resolution head's input
    readout_update: float  # |grad| / |weight| of the full-resolution head's weight


def nnunet_loss(num_outputs: int) -> nn.Module:
    """nnU-Net's training loss for `num_outputs` deep-supervision outputs (nnUNetTrainer._build_loss)."""
    weights = [1 / 2 ** i for i in range(num_outputs)]
    if num_outputs > 1:
        weights[-1] = 0
    weights = [w / sum(weights) for w in weights]
    loss = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    return DeepSupervisionWrapper(loss, weights)


def synthetic_batch(dim: int = 3, size: int = 32, batch: int = 2, generator_seed: int = 0):
    """A noisy image with two small foreground cubes (label 1 and 2), about 1% foreground per class."""
    generator = torch.Generator().manual_seed(generator_seed)
    shape = (batch, 1) + (size,) * dim
    label = torch.zeros(shape)
    side, first = size // 8, size // 4
    label[(slice(None), slice(None)) + (slice(first, first + side),) * dim] = 1
    label[(slice(None), slice(None)) + (slice(2 * first, 2 * first + side),) * dim] = 2
    image = label / 2 + 0.5 * torch.randn(shape, generator=generator)
    return image, label


def _targets(label: torch.Tensor, logits: list[torch.Tensor]) -> list[torch.Tensor]:
    return [nn.functional.interpolate(label, size=tuple(out.shape[2:]), mode="nearest") for out in logits]


def _rms(t: torch.Tensor) -> float:
    return t.detach().double().pow(2).mean().sqrt().item()


# The module whose output is each family's deepest feature map (the bottleneck of its U).
DEEPEST_FEATURES = {
    "UltraLightUNet": "encoder.4",
    "LightMedSeg": "bottleneck",
    "DALight3D": "encoder.3",
    "VeloxSeg": "encoder.3",
    "PlainConvUNet": "encoder.stages.3",
}

# The conv that turns each family's last decoder features into the full-resolution logits.
READOUT = {
    "UltraLightUNet": "head",
    "LightMedSeg": "head",
    "DALight3D": "head.4",
    "VeloxSeg": "head",
    "PlainConvUNet": "decoder.seg_layers.2",
}


def gradient_flow(network: nn.Module, deepest: str, readout: str, image: torch.Tensor,
                  label: torch.Tensor) -> GradientFlow:
    """One training step's gradients on (image, label) through nnU-Net's deep-supervised loss.

    `network` must return a list of logits (deep supervision on), the full resolution first;
    `deepest` names the submodule whose output is the deepest feature map, `readout` the conv that
    makes the full-resolution logits.
    """
    kept, read = [], []

    def keep(module, inputs, output):
        output.retain_grad()
        kept.append(output)

    head = network.get_submodule(readout)
    handles = [network.get_submodule(deepest).register_forward_hook(keep),
               head.register_forward_pre_hook(lambda module, inputs: read.append(_rms(inputs[0])))]
    network.zero_grad(set_to_none=True)
    network.train()
    try:
        outputs = network(image)
    finally:
        for handle in handles:
            handle.remove()
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    for out in outputs:
        out.retain_grad()
    nnunet_loss(len(outputs))(outputs, _targets(label, outputs)).backward()

    convs = [m for m in network.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    ratios = [(m.weight.grad.norm() / m.weight.norm()).item() for m in convs
              if m.weight.grad is not None and m.weight.norm() > 0]
    return GradientFlow(depth_ratio=_rms(kept[-1].grad) / _rms(outputs[0].grad),
                        relative_update=statistics.median(ratios), readout_rms=read[-1],
                        readout_update=(head.weight.grad.norm() / head.weight.norm()).item())


def _plain_conv_unet(dim: int) -> nn.Module:
    """nnU-Net's default network for a Hippocampus-like plan, initialised as nnU-Net does."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from dynamic_network_architectures.initialization.weight_init import InitWeights_He
    from dynamic_network_architectures.building_blocks.helper import (convert_dim_to_conv_op,
                                                                      get_matching_instancenorm)

    conv_op = convert_dim_to_conv_op(dim)
    net = PlainConvUNet(1, 4, (32, 64, 128, 256), conv_op, 3, [1] + [2] * 3, 2, NUM_CLASSES, 2, False,
                        get_matching_instancenorm(conv_op), {"eps": 1e-5, "affine": True}, None, None,
                        nn.LeakyReLU, {"inplace": True}, deep_supervision=True)
    net.apply(InitWeights_He(1e-2))
    return net


def reference_networks(dim: int, size: int) -> list[tuple[str, str, Callable[[], nn.Module]]]:
    """(name, family, build) for nnU-Net's PlainConvUNet and every registered model's default
    variant of `dim` dimensions, for a `size`^dim input with three 2x steps; `build` seeds torch with
    0 first, so every caller starts each network from the same weights."""
    from nnunet_lightseg import registry

    def seeded(build):
        def seeded_build():
            torch.manual_seed(0)
            return build()
        return seeded_build

    networks = [("PlainConvUNet (nnU-Net)", "PlainConvUNet", seeded(lambda: _plain_conv_unet(dim)))]
    plan = registry.Plan(1, NUM_CLASSES, (size,) * dim, [(2,) * dim] * 3, deep_supervision=True)
    networks += [(spec.name, spec.family, seeded(lambda spec=spec: spec.create(plan)))
                 for spec in registry.default_specs() if dim in spec.dims]
    return networks


def table(dims=(3, 2)) -> list[tuple[str, int, GradientFlow]]:
    """(model, dim, figures) for nnU-Net's PlainConvUNet and every registered model's default variant."""
    rows = []
    for dim in dims:
        image, label = synthetic_batch(dim)
        for name, family, build in reference_networks(dim, image.shape[2]):
            rows.append((name, dim, gradient_flow(build(), DEEPEST_FEATURES[family], READOUT[family], image, label)))
    return rows


def main() -> None:
    torch.set_num_threads(1)
    print("| network | dims | depth_ratio | relative_update | readout_rms | readout_update |\n|---|---|---|---|---|---|")
    for name, dim, flow in table():
        print(f"| {name} | {dim}D | {flow.depth_ratio:.3g} | {flow.relative_update:.3g} | "
              f"{flow.readout_rms:.3g} | {flow.readout_update:.3g} |")


if __name__ == "__main__":
    main()
