"""LightMedSeg: shapes, deep supervision, parameter counts, gradients, anchors, ablations, the paper's loss."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nnunet_lightseg import registry
from nnunet_lightseg.architectures.blocks.ghost import GhostConv
from nnunet_lightseg.architectures.lightmedseg import DecoderStage, LightMedSeg
from nnunet_lightseg.architectures.shapes import scaled_size
from nnunet_lightseg.trainers.lightmedseg import nnUNetTrainerLightMedSeg, nnUNetTrainerLightMedSeg_Paper
from nnunet_lightseg.trainers.lightmedseg_loss import LightMedSegLoss, boundary_bands

HIPPOCAMPUS = [(2, 2, 2)] * 3  # 3d_fullres, patch 40x56x40
ANISO = [(1, 2, 2), (2, 2, 2), (2, 2, 2)]
VARIANTS = ["LightMedSeg", "LightMedSeg_StandardConv", "LightMedSeg_K16", "LightMedSeg_K32",
            "LightMedSeg_noLSPM", "LightMedSeg_noAnchors", "LightMedSeg_noSkipRouter"]


def build(name="LightMedSeg", modalities=1, classes=3, steps=HIPPOCAMPUS, ds=False, seed=0):
    torch.manual_seed(seed)
    return registry.get(name).create(registry.Plan(modalities, classes, (40, 56, 40), steps, ds))


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_output_strides_follow_the_plan():
    """Three plan steps for four: the stride-1 step comes right after the stem (issue 11)."""
    assert build(steps=ANISO).output_strides == [(1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 4, 4)]
    assert build(steps=HIPPOCAMPUS).output_strides == [(1, 1, 1), (2, 2, 2), (2, 2, 2), (4, 4, 4)]
    assert build(steps=HIPPOCAMPUS + [(2, 2, 2)]).output_strides == [(1, 1, 1), (2, 2, 2), (4, 4, 4), (8, 8, 8)]


def test_two_dimensional_configurations_are_refused_clearly():
    with pytest.raises(registry.UnsupportedConfigurationError, match="3d_fullres"):
        registry.get("LightMedSeg").create(registry.Plan(1, 2, (56, 40)))
    with pytest.raises(registry.UnsupportedConfigurationError, match="3d_fullres"):
        nnUNetTrainerLightMedSeg.check_configuration(SimpleNamespace(patch_size=[56, 40],
                                                                     pool_op_kernel_sizes=[[1, 1], [2, 2]]))


def test_wrong_number_of_modalities_is_a_clear_error():
    with pytest.raises(ValueError, match="in_channels=1"):
        build()(torch.randn(1, 2, 16, 16, 16))


LITERAL = {"upsample_kernel_size": 2, "ghost_branch_on_concat": False}  # Sec. 3.6 as written


def test_parameter_counts():
    """The default reading (3^3 transposed convs, ghost branch on the 2C_j concatenation) gives the paper's totals."""
    net = LightMedSeg(4, 4, [(2, 2, 2)] * 4)
    dense = LightMedSeg(4, 4, [(2, 2, 2)] * 4, ghost=False)
    assert count(net) == 467658 and count(dense) == 648774
    assert count(net) == pytest.approx(0.48e6, rel=0.10)  # the paper: 0.48M
    assert count(dense) == pytest.approx(0.66e6, rel=0.10)  # the paper: 0.66M (w/o GhostConv3D)
    for name, paper in (("LightMedSeg", 0.48e6), ("LightMedSeg_StandardConv", 0.66e6),
                        ("LightMedSeg_K16", 0.49e6), ("LightMedSeg_K32", 0.52e6)):
        assert count(registry.get(name).create(registry.Plan(4, 4, (128,) * 3, [(2, 2, 2)] * 4))) == \
            pytest.approx(paper, rel=0.10)
    # the module costs the paper states: anchor detector 8.6K, LSPM 11.7K (1K + 10.5K + 0.15K), router 24K
    assert count(net.anchor_detector) == pytest.approx(8.6e3, rel=0.01)
    assert count(net.lspm) == pytest.approx(11.7e3, rel=0.01)
    assert count(net.lspm.smooth) + count(net.lspm.texture) == pytest.approx(1e3, rel=0.05)
    assert count(net.lspm.gating_head) + count(net.lspm.expert_weights) == pytest.approx(10.5e3, rel=0.01)
    assert count(net.lspm.experts) == pytest.approx(0.15e3, rel=0.05)
    assert count(net.router.project) + count(net.router.controller) == pytest.approx(24e3, rel=0.05)
    # K = 8 -> 16 -> 32 adds about 0.01M and 0.03M (paper: 0.48M -> 0.49M -> 0.52M)
    k16, k32 = (count(LightMedSeg(4, 4, [(2, 2, 2)] * 4, num_anchors=k)) for k in (16, 32))
    assert k16 - count(net) == pytest.approx(0.01e6, rel=0.05)
    assert k32 - count(net) == pytest.approx(0.03e6, rel=0.05)


def test_literal_reading_stays_available():
    """The text as written (2x2x2 transposed convs, ghost branch on the C_j fusion): 0.27M / 0.37M, ~45% short."""
    literal = LightMedSeg(4, 4, [(2, 2, 2)] * 4, **LITERAL)
    assert count(literal) == 265322
    assert count(LightMedSeg(4, 4, [(2, 2, 2)] * 4, ghost=False, **LITERAL)) == 372998
    assert all(stage.up.kernel_size == (2, 2, 2) and stage.up.padding == (0, 0, 0) for stage in literal.decoder)
    default = LightMedSeg(4, 4, [(2, 2, 2)] * 4)
    assert all(stage.up.kernel_size == (3, 3, 3) for stage in default.decoder)
    # only the decoder differs
    assert count(literal) - count(literal.decoder) == count(default) - count(default.decoder)


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("step", [(2, 2, 2), (1, 2, 2), (1, 1, 1), (2, 1, 2)])
def test_decoder_upsampling_multiplies_the_size_by_the_step(kernel, step):
    stage = DecoderStage(4, 4, step, 0, True, upsample_kernel_size=kernel)
    size = (3, 5, 4)
    assert stage.up(torch.randn(1, 4, *size)).shape[2:] == tuple(n * s for n, s in zip(size, step))


@pytest.mark.parametrize("steps,size", [(HIPPOCAMPUS, (20, 28, 20)), (ANISO, (13, 30, 22))])
def test_literal_reading_shapes_and_gradients(steps, size):
    torch.manual_seed(0)
    net = LightMedSeg(1, 3, registry.fit_strides(registry.Plan(1, 3, size, steps), 4), deep_supervision=True, **LITERAL)
    x = torch.randn(1, 1, *size)
    outputs = net(x)
    for y, stride in zip(outputs, net.output_strides):
        assert y.shape == (1, 3) + scaled_size(size, stride)
    sum(y.square().mean() for y in outputs).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_gmac_at_the_paper_input():
    def gmac(**settings):
        with torch.device("meta"):
            net, x = LightMedSeg(4, 4, [(2, 2, 2)] * 4, **settings), torch.empty(1, 4, 128, 128, 128)
        with FlopCounterMode(display=False) as counter:
            net(x)
        return counter.get_total_flops() / 2e9

    default = gmac()
    assert default == pytest.approx(15.26, abs=0.01)
    assert default == pytest.approx(14.64, rel=0.20)  # the paper: 14.64 "GFLOPs" (read as GMAC)
    assert gmac(**LITERAL) == pytest.approx(10.70, abs=0.01)  # the text as written: -27%


def test_anchors_stay_in_the_unit_cube():
    net = build(modalities=2)
    for scale in (1.0, 1e4, -1e4):
        anchors = net.anchor_detector(scale * torch.randn(3, 2, 12, 20, 16))
        assert anchors.shape == (3, 8, 3)
        assert ((anchors >= 0) & (anchors <= 1)).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_decoder_stages_start_at_about_unit_scale(name):
    """LightMedSeg.initialise starts the decoder branches' GroupNorm scale at 3 so that every decoder
    stage's output, the head's input among them, starts at about unit RMS (issue 11); at scale 1 the
    softmax average of the branches and the SE gate left 0.2-0.3, and the network learned slowly."""
    net, outputs = build(name), []
    for stage in net.decoder:
        stage.register_forward_hook(lambda module, args, output: outputs.append(output.pow(2).mean().sqrt().item()))
    with torch.no_grad():
        net(torch.randn(2, 1, 40, 56, 40))
    assert len(outputs) == 4
    assert all(0.6 < rms < 1.6 for rms in outputs), outputs


@pytest.mark.parametrize("name,removed", [
    ("LightMedSeg_noLSPM", ("lspm.",)),
    ("LightMedSeg_noAnchors", ("anchor_detector.", ".film.", ".position.")),
    ("LightMedSeg_noSkipRouter", ("router.",)),
])
def test_each_ablation_removes_its_parameters_and_changes_the_output(name, removed):
    full, ablated = build(), build(name)
    full_keys, ablated_keys = set(full.state_dict()), set(ablated.state_dict())
    assert all(any(r in k for k in full_keys) for r in removed)
    assert not any(r in k for k in ablated_keys for r in removed)
    assert count(ablated) < count(full)
    # share every parameter the two have in common: only the removed component can differ
    shared = {k: v for k, v in full.state_dict().items()
              if k in ablated.state_dict() and ablated.state_dict()[k].shape == v.shape}
    ablated.load_state_dict(shared, strict=False)
    x = torch.randn(1, 1, 16, 24, 16)
    with torch.no_grad():
        assert not torch.allclose(full(x), ablated(x), atol=1e-5)


def test_standard_conv_variant_has_no_ghost_convs():
    assert any(isinstance(m, GhostConv) for m in build().modules())
    assert not any(isinstance(m, GhostConv) for m in build("LightMedSeg_StandardConv").modules())


# ---------------------------------------------------------------- the paper's loss (Sec. 3.7)

def _line(labels):
    """A (1, 1, 1, 1, N) nnU-Net target from a 1D list of labels."""
    return torch.tensor(labels, dtype=torch.float32).view(1, 1, 1, 1, -1)


def test_boundary_band_is_an_l_infinity_dilation_of_three():
    target = torch.zeros(1, 11, 11, 11, dtype=torch.long)
    target[0, 5, 5, 5] = 1
    onehot = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float()
    band = boundary_bands(onehot)
    # boundary: the 3^3 block around the voxel; dilated by 3 (L-inf): the 9^3 cube around it
    assert band[0, 1].sum() == 9 ** 3 and band[0, 0].sum() == 9 ** 3
    assert band[0, 1, 1:10, 1:10, 1:10].all() and band[0, 1, 0].sum() == 0


def test_loss_on_a_hand_made_mask():
    # 7 background voxels then 3 foreground voxels; p(foreground) = 0.8 everywhere
    target = _line([0] * 7 + [1] * 3)
    logits = torch.zeros(1, 2, 1, 1, 10)
    logits[:, 1] = math.log(4)
    terms = LightMedSegLoss().terms(logits, target)
    w0, w1 = 10 / (2 * 7), 10 / (2 * 3)  # inverse voxel frequency
    dice0, dice1 = 2 * 0.2 * 7 / (0.2 * 10 + 7), 2 * 0.8 * 3 / (0.8 * 10 + 3)
    assert terms["dice"].item() == pytest.approx(1 - (w0 * dice0 + w1 * dice1) / (w0 + w1), rel=1e-4)
    # weighted CE: sum_r w_y CE_r / sum_r w_y = (5 (-log 0.2) + 5 (-log 0.8)) / 10
    assert terms["ce"].item() == pytest.approx(-(math.log(0.2) + math.log(0.8)) / 2, rel=1e-4)
    # boundary at voxels 6 and 7; band 3..9 (7 voxels): 4 with y = 0, 3 with y = 1, the same for both classes
    bce = -(4 * math.log(0.2) + 3 * math.log(0.8)) / 7
    assert terms["boundary"].item() == pytest.approx(0.5 * bce, rel=1e-4)
    assert LightMedSegLoss()(logits, target).item() == pytest.approx(sum(t.item() for t in terms.values()), rel=1e-6)


def test_loss_without_boundaries_and_with_absent_classes():
    logits = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    target = torch.zeros(2, 1, 4, 5, 6)
    terms = LightMedSegLoss().terms(logits, target)
    assert terms["boundary"].item() == 0
    sum(terms.values()).backward()
    assert torch.isfinite(logits.grad).all()


def test_paper_trainer_builds_its_loss_with_and_without_deep_supervision():
    trainer = SimpleNamespace(label_manager=SimpleNamespace(has_regions=False, has_ignore_label=False),
                              enable_deep_supervision=False)
    loss = nnUNetTrainerLightMedSeg_Paper._build_loss(trainer)
    assert isinstance(loss, LightMedSegLoss)
    trainer.enable_deep_supervision = True
    trainer._get_deep_supervision_scales = lambda: [[1.0] * 3, [0.5] * 3]
    loss = nnUNetTrainerLightMedSeg_Paper._build_loss(trainer)
    target = _line([0] * 6 + [1] * 2)
    value = loss([torch.zeros(1, 2, 1, 1, 8), torch.zeros(1, 2, 1, 1, 4)], [target, target[..., ::2]])
    assert torch.isfinite(value)


@pytest.mark.parametrize("labels", [{"background": 0, "a": 1, "ignore": 2},
                                    {"background": 0, "whole": [1, 2], "core": 2}])
def test_paper_trainer_refuses_regions_and_ignore_labels_before_making_folders(labels, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    dataset_json = {"channel_names": {"0": "x"}, "labels": labels, "regions_class_order": [1, 2]}
    with pytest.raises(registry.UnsupportedConfigurationError, match="nnUNetTrainerLightMedSeg_Paper: the paper's"):
        nnUNetTrainerLightMedSeg_Paper({"label_manager": "LabelManager", "continue_training": False}, "3d_fullres",
                                       0, dataset_json, torch.device("cpu"))
    assert not (tmp_path / "results").exists()


def test_paper_recipe_settings():
    assert (nnUNetTrainerLightMedSeg_Paper.paper_lr, nnUNetTrainerLightMedSeg_Paper.paper_weight_decay,
            nnUNetTrainerLightMedSeg_Paper.paper_min_lr) == (2e-4, 1e-5, 1e-9)
    assert not nnUNetTrainerLightMedSeg_Paper.paper_deep_supervision


def test_nnunet_recipe_reduces_the_loss_without_nan():
    """A few steps of nnU-Net's optimiser (SGD, lr 1e-2, Nesterov momentum 0.99) and loss on a synthetic blob."""
    from nnunet_lightseg.measure.lightmedseg_stability import nnunet_recipe_losses

    net = build(ds=True)
    size = (12, 16, 12)
    zz, yy, xx = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in size], indexing="ij")
    y = (zz ** 2 + yy ** 2 + xx ** 2 < 0.4).float()[None, None].repeat(2, 1, 1, 1, 1)
    x = y + 0.3 * torch.randn_like(y)
    losses = nnunet_recipe_losses(net, [(x, y)] * 10)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < losses[0]
