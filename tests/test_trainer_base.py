"""The shared trainer base, without training: building from plans, deep supervision, schedules."""
import copy

import numpy as np
import pytest
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_lightseg import registry, trainers
from nnunet_lightseg.errors import UsageError
from nnunet_lightseg.schedules import ITERATIONS_VARIABLE, Schedule, scheduled_name, split
from nnunet_lightseg.trainers.base import AtomicCheckpoints, LightSegTrainer, _positive_int_from_env
from nnunet_lightseg.trainers.recipes import WarmupCosineLRScheduler


def plans_dict(patch, strides):
    return {"dataset_name": "Dataset001_Test", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1, 1],
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


def configuration(patch, strides):
    manager = PlansManager(plans_dict(patch, strides))
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
    short = trainers.nnUNetTrainerUltraLightUNet_S_7epochs_20iters
    assert short is getattr(trainers, "nnUNetTrainerUltraLightUNet_S_7epochs_20iters")
    assert issubclass(short, trainers.nnUNetTrainerUltraLightUNet_S)
    assert short.schedule == Schedule(7, 20)
    assert trainers.nnUNetTrainerUltraLightUNet_1epoch.__name__ == "nnUNetTrainerUltraLightUNet_1epoch"
    assert trainers.nnUNetTrainerBaseline_2epochs_1iter.schedule == Schedule(2, 1)
    assert not hasattr(trainers, "nnUNetTrainerUnknown_5epochs")


@pytest.mark.parametrize("schedule, suffix", [(Schedule(5, 20), "_5epochs_20iters"), (Schedule(1, 1), "_1epoch_1iter"),
                                              (Schedule(epochs=3), "_3epochs"), (Schedule(iterations=40), "_40iters"),
                                              (Schedule(), ""), (Schedule(5, 20, 3), "_5epochs_20iters_seed3"),
                                              (Schedule(seed=0), "_seed0"), (Schedule(iterations=2, seed=1), "_2iters_seed1")])
def test_schedule_names_round_trip(schedule, suffix):
    assert scheduled_name("nnUNetTrainerX_K16", schedule) == "nnUNetTrainerX_K16" + suffix
    assert split("nnUNetTrainerX_K16" + suffix) == ("nnUNetTrainerX_K16", schedule)
    assert Schedule(5, 20).val_iterations == 5 and Schedule(5, 3).val_iterations == 1


@pytest.mark.parametrize("name", ["nnUNetTrainerUltraLightUNet_0epochs", "nnUNetTrainerUltraLightUNet_007epochs",
                                  "nnUNetTrainerUltraLightUNet_1epochs", "nnUNetTrainerUltraLightUNet_5epochs_0iters",
                                  "nnUNetTrainerUltraLightUNet_20iters_5epochs", "nnUNetTrainerUltraLightUNet_seed01",
                                  "nnUNetTrainerUltraLightUNet_2epochs_seed1_3iters"])
def test_invalid_schedule_names_fail_as_a_lookup_with_our_reason_first(name, capsys):
    assert not hasattr(trainers, name)  # nnU-Net's trainer search asks with hasattr
    error = capsys.readouterr().err
    assert error.startswith(f"nnunet-lightseg: {name} is not a valid schedule name") and error.count("\n") == 1
    assert name not in dir(trainers) and "_7epochs" not in vars(trainers)


def test_the_name_sets_epochs_and_iterations_and_wins_over_the_deprecated_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))  # the trainer makes its output folder
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    dataset_json = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}, "numTraining": 1,
                    "file_ending": ".nii.gz"}
    plans = {**plans_dict((16, 16, 16), [[2, 2, 2]] * 2), "continue_training": False}
    monkeypatch.setenv(ITERATIONS_VARIABLE, "7")
    for name, expected in (("nnUNetTrainerBaseline_3epochs_8iters", (3, 8, 2)),
                           ("nnUNetTrainerUltraLightUNet_T_1epoch_1iter", (1, 1, 1)),
                           ("nnUNetTrainerUltraLightUNet_T_2epochs", (2, 7, 50))):  # no iters: the variable
        trainer = getattr(trainers, name)(copy.deepcopy(plans), "c", 0, dataset_json, torch.device("cpu"))
        assert (trainer.num_epochs, trainer.num_iterations_per_epoch,
                trainer.num_val_iterations_per_epoch) == expected, name


def test_a_seed_in_the_name_makes_the_initial_weights_repeatable(monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    dataset_json = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}, "numTraining": 1,
                    "file_ending": ".nii.gz"}
    plans = {**plans_dict((16, 16, 16), [[2, 2, 2]] * 2), "continue_training": False}

    def first_weight(name):
        trainer = getattr(trainers, name)(copy.deepcopy(plans), "c", 0, dataset_json, torch.device("cpu"))
        network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1, 2, True)
        return next(network.parameters()).detach().clone()

    assert trainers.nnUNetTrainerVeloxSeg_1epoch_seed4.schedule == Schedule(1, None, 4)
    assert torch.equal(first_weight("nnUNetTrainerVeloxSeg_1epoch_seed4"), first_weight("nnUNetTrainerVeloxSeg_1epoch_seed4"))
    assert not torch.equal(first_weight("nnUNetTrainerVeloxSeg_1epoch_seed4"),
                           first_weight("nnUNetTrainerVeloxSeg_1epoch_seed5"))


def test_a_checkpoint_interrupted_mid_write_leaves_the_previous_one_whole(tmp_path):
    class Writer:  # stands in for nnUNetTrainer.save_checkpoint: writes, maybe killed half-way
        interrupt = False

        def save_checkpoint(self, filename):
            with open(filename, "wb") as f:
                f.write(b"new, half")
                if self.interrupt:
                    raise KeyboardInterrupt
                f.write(b" and whole")

    class Trainer(AtomicCheckpoints, Writer):
        pass

    latest = tmp_path / "checkpoint_latest.pth"
    latest.write_bytes(b"old")
    trainer = Trainer()
    trainer.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(str(latest))
    assert latest.read_bytes() == b"old"
    trainer.interrupt = False
    trainer.save_checkpoint(str(latest))
    assert latest.read_bytes() == b"new, half and whole" and sorted(p.name for p in tmp_path.iterdir()) == [latest.name]
    for trainer_class in (LightSegTrainer, trainers.nnUNetTrainerBaseline):
        order = trainer_class.__mro__
        assert order.index(AtomicCheckpoints) < order.index(nnUNetTrainer), trainer_class


def test_every_trainer_names_a_registered_model():
    for name in trainers.__all__:
        cls = getattr(trainers, name)
        if issubclass(cls, LightSegTrainer):
            registry.get(cls.model_name)


PAPER_EPOCHS = {"UltraLightUNet": 160, "LightMedSeg": 300, "DALight3D": 50, "VeloxSeg": 300}


def test_every_paper_model_has_a_default_and_a_paper_trainer_with_the_papers_epochs():
    for spec in registry.all_specs():
        if spec.family not in PAPER_EPOCHS:
            continue
        default = getattr(trainers, f"nnUNetTrainer{spec.name}")
        paper = getattr(trainers, f"nnUNetTrainer{spec.name}_Paper")
        assert default.model_name == paper.model_name == spec.name and issubclass(paper, default)
        assert paper.paper_epochs == PAPER_EPOCHS[spec.family], spec.name


def test_ultralightunet_paper_trainers_refuse_2d_before_making_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    with pytest.raises(registry.UnsupportedConfigurationError,
                       match=r"nnUNetTrainerUltraLightUNet_T_Paper: the paper's 2D recipes are not implemented"):
        trainers.nnUNetTrainerUltraLightUNet_T_Paper(plans_dict((56, 40), [[2, 2]] * 3), "c", 0,
                                                     {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}},
                                                     torch.device("cpu"))
    assert not (tmp_path / "results").exists()


def test_iteration_variables_are_validated(monkeypatch):
    monkeypatch.setenv("NNUNET_LIGHTSEG_ITERATIONS", "abc")
    with pytest.raises(UsageError, match="positive whole number"):
        _positive_int_from_env("NNUNET_LIGHTSEG_ITERATIONS")
    monkeypatch.setenv("NNUNET_LIGHTSEG_ITERATIONS", "7")
    assert _positive_int_from_env("NNUNET_LIGHTSEG_ITERATIONS") == 7
    monkeypatch.delenv("NNUNET_LIGHTSEG_ITERATIONS")
    assert _positive_int_from_env("NNUNET_LIGHTSEG_ITERATIONS") is None


@pytest.mark.parametrize("case", ["3d-only trainer on 2d", "bad iterations variable"])
def test_start_up_errors_come_before_nnunet_makes_the_fold_folder(case, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    dataset_json = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}, "numTraining": 1,
                    "file_ending": ".nii.gz"}
    if case == "bad iterations variable":
        monkeypatch.setenv(ITERATIONS_VARIABLE, "0")
        trainer, plans, error = trainers.nnUNetTrainerUltraLightUNet_T, plans_dict((16, 16, 16), [[2, 2, 2]] * 2), \
            UsageError
    else:
        three_d_only = next(s for s in registry.all_specs() if s.dims == (3,))
        trainer = next(getattr(trainers, n) for n in trainers.__all__
                       if getattr(getattr(trainers, n), "model_name", "") == three_d_only.name)
        plans, error = plans_dict((56, 40), [[2, 2]] * 3), registry.UnsupportedConfigurationError
    with pytest.raises(error):
        trainer({**plans, "continue_training": False}, "c", 0, dataset_json, torch.device("cpu"))
    assert not (tmp_path / "results").exists()


def test_warmup_cosine_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupCosineLRScheduler(optimizer, 1.0, max_steps=10, warmup_steps=2, min_lr=0.1)
    lrs = [scheduler.lr_at(step) for step in range(12)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0) and lrs[2] == pytest.approx(1.0)
    assert np.all(np.diff(lrs[2:10]) < 0) and lrs[9] == pytest.approx(0.1) and lrs[11] == pytest.approx(0.1)


def test_ultralightunet_trains_in_float32_where_nnunet_would_use_mixed_precision(monkeypatch, tmp_path):
    # On CUDA nnU-Net makes a GradScaler and enters float16 autocast in its steps; UltraLightUNet's trainers
    # make none and keep the network's forward in float32 (trainers/precision.py). CPU bfloat16 autocast
    # stands in for CUDA's float16 here.
    data = tmp_path / "Dataset001_Test" / "x"
    data.mkdir(parents=True)
    (data / "case.npz").touch()
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    dataset_json = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}, "numTraining": 1,
                    "file_ending": ".nii.gz"}
    plans = {**plans_dict((16, 16, 16), [[2, 2, 2]] * 2), "continue_training": False}
    plans["configurations"]["c"]["batch_dice"] = False

    def make(name, device):
        return getattr(trainers, name)(copy.deepcopy(plans), "c", 0, dataset_json, torch.device(device))

    assert make("nnUNetTrainerUltraLightUNet", "cuda").grad_scaler is None
    assert make("nnUNetTrainerUltraLightUNet_Paper", "cuda").grad_scaler is None
    assert make("nnUNetTrainerLightMedSeg", "cuda").grad_scaler is not None  # nnU-Net's mixed precision
    x = torch.randn(2, 1, 16, 16, 16)
    for name, dtype in (("nnUNetTrainerUltraLightUNet", torch.float32), ("nnUNetTrainerLightMedSeg", torch.bfloat16)):
        trainer = make(name, "cpu")
        trainer.initialize()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert trainer.network(x)[0].dtype == dtype, name
