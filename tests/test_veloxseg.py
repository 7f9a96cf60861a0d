"""VeloxSeg: shapes, deep supervision, SDKT kept out of inference, the Gram loss, gradients, trainers."""
import copy
import os

import pytest
import torch

from nnunet_lightseg import registry
from nnunet_lightseg.architectures.blocks.window_attention import window_pool_factors
from nnunet_lightseg.architectures.shapes import scaled_size
from nnunet_lightseg.architectures.veloxseg_sdkt import SDKTTeacher, gram_loss, gram_matrix, sdkt_losses
from nnunet_lightseg.zoo.veloxseg import level_strides

ISO = [(2, 2, 2)] * 3
ANISO = [(1, 2, 2), (2, 2, 2), (2, 2, 2)]


def plan(modalities=1, classes=2, steps=ISO, ds=False, patch=(64, 64, 64)):
    return registry.Plan(modalities, classes, patch, steps, ds)


def build(modalities=1, classes=2, steps=ISO, ds=False):
    torch.manual_seed(0)
    return registry.get("VeloxSeg").create(plan(modalities, classes, steps, ds))


def test_level_strides_from_the_plan():
    assert level_strides(plan(steps=None)) == [(4, 4, 4), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert level_strides(plan(steps=ANISO)) == [(2, 4, 4), (2, 2, 2), (1, 1, 1), (1, 1, 1)]
    assert level_strides(plan(steps=[(2, 2, 2)] * 6)) == [(4, 4, 4)] + [(2, 2, 2)] * 3


def test_window_scales_follow_the_feature_map():
    assert window_pool_factors((24, 24, 24), 3, 8) == [(1,) * 3, (2,) * 3, (4,) * 3, (8,) * 3]
    assert window_pool_factors((3, 3, 3), 3, 8) == [(1, 1, 1)]
    assert window_pool_factors((2, 12, 12), 3, 8) == [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    assert window_pool_factors((24, 24, 24), 3, 2) == [(1,) * 3, (8,) * 3]  # finest + global when heads run out


def test_wrong_number_of_modalities_is_a_clear_error():
    with pytest.raises(ValueError, match="in_channels=3"):
        build(2)(torch.randn(1, 3, 16, 16, 16))


def test_too_small_a_patch_is_a_clear_error():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunet_lightseg.trainers import nnUNetTrainerVeloxSeg
    with pytest.raises(ValueError, match=r"at least \(33, 33, 33\)"):
        build(1, 2, None)(torch.randn(1, 1, 32, 40, 40))
    plans = copy.deepcopy(PLANS)
    plans["configurations"]["3d_fullres"]["patch_size"] = [4, 16, 16]  # level strides 4, (1,2,2): total (4, 8, 8)
    with pytest.raises(registry.UnsupportedConfigurationError, match=r"at least \(5, 9, 9\)"):
        nnUNetTrainerVeloxSeg.check_configuration(PlansManager(plans).get_configuration("3d_fullres"))


def test_2d_is_a_clear_error():
    with pytest.raises(registry.UnsupportedConfigurationError, match="3d_fullres"):
        registry.get("VeloxSeg").create(registry.Plan(1, 2, (28, 20), [(2, 2)] * 3))


def test_inference_never_runs_the_reconstruction_decoders():
    net = build(2).eval()
    teacher = SDKTTeacher(net)
    called = []
    for module in teacher.modules():
        module.register_forward_hook(lambda *_: called.append(1))
    with torch.no_grad():
        net(torch.randn(1, 2, 16, 16, 16))
    assert not called
    assert not any("sdkt" in k or "reconstruction" in k for k in net.state_dict())
    assert not set(net.state_dict()) & {f"decoders.{k}" for k in teacher.state_dict()}


def test_attention_scores_stay_float32_under_autocast(monkeypatch):
    import torch.nn.functional as F
    seen = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda q, *a, **k: seen.append(q.dtype) or sdpa(q, *a, **k))
    net = build(2).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(100 * torch.randn(1, 2, 16, 16, 16))
    assert seen and set(seen) == {torch.float32} and torch.isfinite(y.float()).all()


def test_gram_loss_on_known_tensors():
    f = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 1.0]]).reshape(1, 2, 4, 1, 1)
    # F F^T = [[5, 0], [0, 2]], normalised by C * voxels = 8
    assert torch.allclose(gram_matrix(f), torch.tensor([[[5.0, 0.0], [0.0, 2.0]]]) / 8)
    assert gram_loss(f, [f, f]) == 0
    g = torch.zeros_like(f)
    # MSE against a zero Gram: mean of (25 + 4) / 64 over 4 entries
    assert torch.isclose(gram_loss(f, [g]), torch.tensor(29 / 64 / 4))
    assert torch.isclose(gram_loss(f, [f, g]), torch.tensor(29 / 64 / 4 / 2))


def test_gradients_reach_every_parameter_in_training():
    net = build(2, 2, ANISO, ds=True).train()
    teacher = SDKTTeacher(net)
    net.return_features = True
    x = torch.randn(1, 2, 8, 24, 24)
    outputs, features = net(x)
    reconstruction, gram = sdkt_losses(teacher, features, x)
    (sum(y.square().mean() for y in outputs) + reconstruction + gram).backward()
    missing = [n for n, p in list(net.named_parameters()) + list(teacher.named_parameters()) if p.grad is None]
    assert not missing


def test_a_few_sgd_steps_reduce_the_loss():
    net = build(2, 2, ISO, ds=False).train()
    teacher = SDKTTeacher(net)
    params = list(net.parameters()) + list(teacher.parameters())
    opt = torch.optim.SGD(params, lr=1e-2, momentum=0.99, nesterov=True)
    torch.manual_seed(1)
    x = torch.randn(2, 2, 16, 16, 16)
    target = (x[:, :1] > 0.5).long()[:, 0]
    net.return_features = True
    losses = []
    for _ in range(8):
        opt.zero_grad()
        logits, features = net(x)
        reconstruction, gram = sdkt_losses(teacher, features, x)
        loss = torch.nn.functional.cross_entropy(logits, target) + 0.5 * reconstruction + 2.0 * gram
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 12)
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


# --- trainers -------------------------------------------------------------------------------------------------

PLANS = {
    "dataset_name": "Dataset999_Velox", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1, 1],
    "original_median_shape_after_transp": [16, 16, 16], "image_reader_writer": "SimpleITKIO",
    "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
    "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
    "configurations": {
        "3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [16, 16, 16], "median_image_size_in_voxels": [16, 16, 16],
            "spacing": [1, 1, 1], "normalization_schemes": ["ZScoreNormalization"] * 2,
            "use_mask_for_norm": [False] * 2, "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {},
            "resampling_fn_seg_kwargs": {}, "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {}, "batch_dice": False,
            "architecture": {"network_class_name": "unused", "_kw_requires_import": [],
                             "arch_kwargs": {"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 2, 2]]}},
        },
        "2d": {
            "inherits_from": "3d_fullres", "patch_size": [16, 16],
            "architecture": {"network_class_name": "unused", "_kw_requires_import": [],
                             "arch_kwargs": {"strides": [[1, 1], [2, 2], [2, 2]]}},
        },
    },
}
DATASET = {"channel_names": {"0": "PET", "1": "CT"}, "labels": {"background": 0, "lesion": 1},
           "numTraining": 2, "file_ending": ".nii.gz"}


@pytest.fixture
def trainer_env(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    folder = tmp_path / "preprocessed" / PLANS["dataset_name"] / "nnUNetPlans_3d_fullres"
    folder.mkdir(parents=True)
    (folder / "case.b2nd").touch()  # lets nnU-Net infer its dataset class

    def make(trainer_class, configuration="3d_fullres"):
        plans = copy.deepcopy(PLANS)
        plans["continue_training"] = False
        return trainer_class(plans, configuration, 0, copy.deepcopy(DATASET), torch.device("cpu"))
    return make


def test_trainers_refuse_2d(trainer_env):
    from nnunet_lightseg.trainers import nnUNetTrainerVeloxSeg
    with pytest.raises(registry.UnsupportedConfigurationError, match="3d_fullres"):
        trainer_env(nnUNetTrainerVeloxSeg, "2d")


def test_checkpoint_round_trip_keeps_inference_weights_strict(trainer_env, tmp_path):
    from nnunet_lightseg.trainers import nnUNetTrainerVeloxSeg
    trainer = trainer_env(nnUNetTrainerVeloxSeg)
    trainer.initialize()
    assert len(trainer.optimizer.param_groups) == 2
    batch = {"data": torch.randn(2, 2, 16, 16, 16),
             "target": [torch.randint(0, 2, (2, 1) + scaled_size((16,) * 3, s)).float()
                        for s in trainer.network.output_strides]}
    assert torch.isfinite(torch.tensor(trainer.train_step(batch)["loss"]))
    assert not trainer.network.return_features
    path = str(tmp_path / "checkpoint.pth")
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert "sdkt_weights" in checkpoint and not [f for f in os.listdir(tmp_path) if f.endswith(".partial")]

    resumed = trainer_env(nnUNetTrainerVeloxSeg)
    resumed.load_checkpoint(path)
    for key, value in trainer.sdkt.state_dict().items():
        assert torch.equal(resumed.sdkt.state_dict()[key], value)

    inference = nnUNetTrainerVeloxSeg.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, 2, 2, enable_deep_supervision=False)
    inference.load_state_dict(checkpoint["network_weights"], strict=True)
    assert sum(p.numel() for p in inference.parameters()) < \
        sum(p.numel() for p in trainer.network.parameters()) + sum(p.numel() for p in trainer.sdkt.parameters())


def test_a_checkpoint_write_that_fails_leaves_the_previous_checkpoint_whole(trainer_env, tmp_path, monkeypatch):
    from nnunet_lightseg.trainers import nnUNetTrainerVeloxSeg
    trainer = trainer_env(nnUNetTrainerVeloxSeg)
    trainer.initialize()
    path = str(tmp_path / "checkpoint.pth")
    trainer.save_checkpoint(path)
    before = open(path, "rb").read()
    real_save = torch.save

    def crash_on_disk(obj, f, *args, **kwargs):
        if isinstance(f, str):
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    trainer.current_epoch += 1
    monkeypatch.setattr(torch, "save", crash_on_disk)
    with pytest.raises(OSError):
        trainer.save_checkpoint(path)
    assert open(path, "rb").read() == before


def test_paper_trainer_recipe(trainer_env):
    from nnunet_lightseg.trainers import nnUNetTrainerVeloxSeg_Paper
    trainer = trainer_env(nnUNetTrainerVeloxSeg_Paper)
    trainer.initialize()
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and len(trainer.optimizer.param_groups) == 2
    assert trainer.enable_deep_supervision and set(trainer.loss.weight_factors) == {1.0}
    trainer.lr_scheduler.step(trainer.num_epochs - 1)
    assert all(abs(g["lr"] - 6e-6) < 1e-9 for g in trainer.optimizer.param_groups)
