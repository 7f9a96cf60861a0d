"""The shared trainer base, without training: building from plans, deep supervision, schedules."""
import numpy as np
import pytest
import torch

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_lightseg import registry, trainers
from nnunet_lightseg.trainers.base import LightSegTrainer, _positive_int_from_env
from nnunet_lightseg.trainers.recipes import WarmupCosineLRScheduler


def configuration(patch, strides):
    plans = {"dataset_name": "Dataset001_Test", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1, 1],
             "original_median_shape_after_transp": list(patch), "image_reader_writer": "SimpleITKIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "configurations": {"c": {"data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                                      "patch_size": list(patch), "spacing": [1] * len(patch),
                                      "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
                                      "architecture": {"network_class_name": "x",
                                                       "arch_kwargs": {"strides": [[1] * len(patch)] + strides},
                                                       "_kw_requires_import": []}}},
             "experiment_planner_used": "x", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {}}
    manager = PlansManager(plans)
    return manager, manager.get_configuration("c")


@pytest.mark.parametrize("patch, strides", [((40, 56, 40), [[2, 2, 2]] * 3), ((56, 40), [[2, 2]] * 3),
                                            ((20, 64, 64), [[1, 2, 2], [2, 2, 2], [1, 2, 2]])])
def test_built_from_the_plan_with_matching_deep_supervision_scales(patch, strides):
    plans, conf = configuration(patch, strides)
    net = trainers.nnUNetTrainerUltraLightUNet_T.build_network_architecture(plans, conf, 2, 3, True)
    outputs = net(torch.randn(2, 2, *patch))
    # what _get_deep_supervision_scales gives nnU-Net's target downsampling, for this network
    scales = [[1.0 / s for s in stride] for stride in net.output_strides]
    for out, scale in zip(outputs, scales):
        assert list(out.shape[2:]) == [round(p * s) for p, s in zip(patch, scale)]
    assert net.output_strides[1] == tuple(strides[0])


def test_a_3d_only_network_refuses_2d_with_a_clear_message():
    three_d_only = [s for s in registry.all_specs() if s.dims == (3,)]
    if not three_d_only:
        pytest.skip("no 3D-only model registered")
    trainer = next(getattr(trainers, n) for n in trainers.__all__
                   if getattr(getattr(trainers, n), "model_name", "") == three_d_only[0].name)
    plans, conf = configuration((56, 40), [[2, 2]] * 3)
    with pytest.raises(registry.UnsupportedConfigurationError, match="3d_fullres"):
        trainer.build_network_architecture(plans, conf, 1, 2, True)


def test_short_schedules_are_made_on_request_and_stay_the_same_class():
    short = trainers.nnUNetTrainerUltraLightUNet_S_7epochs
    assert short is getattr(trainers, "nnUNetTrainerUltraLightUNet_S_7epochs")
    assert issubclass(short, trainers.nnUNetTrainerUltraLightUNet_S)
    assert trainers.nnUNetTrainerUltraLightUNet_1epoch.__name__ == "nnUNetTrainerUltraLightUNet_1epoch"
    assert not hasattr(trainers, "nnUNetTrainerUnknown_5epochs")
    assert not hasattr(trainers, "nnUNetTrainerUltraLightUNet_1epochs")


def test_every_trainer_names_a_registered_model():
    for name in trainers.__all__:
        cls = getattr(trainers, name)
        if issubclass(cls, LightSegTrainer):
            registry.get(cls.model_name)


def test_iteration_variables_are_validated(monkeypatch):
    monkeypatch.setenv("NNUNET_LIGHTSEG_ITERATIONS", "abc")
    with pytest.raises(ValueError, match="positive whole number"):
        _positive_int_from_env("NNUNET_LIGHTSEG_ITERATIONS", 250)
    monkeypatch.setenv("NNUNET_LIGHTSEG_ITERATIONS", "7")
    assert _positive_int_from_env("NNUNET_LIGHTSEG_ITERATIONS", 250) == 7
    monkeypatch.delenv("NNUNET_LIGHTSEG_ITERATIONS")
    assert _positive_int_from_env("NNUNET_LIGHTSEG_ITERATIONS", 250) == 250


def test_warmup_cosine_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupCosineLRScheduler(optimizer, 1.0, max_steps=10, warmup_steps=2, min_lr=0.1)
    lrs = [scheduler.lr_at(step) for step in range(12)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0) and lrs[2] == pytest.approx(1.0)
    assert np.all(np.diff(lrs[2:10]) < 0) and lrs[10] == pytest.approx(0.1) and lrs[11] == pytest.approx(0.1)
