"""MONAI baseline trainers fit a plan; `profile -d -c` measures trainers on a tiny hand-written plan."""
import json
import subprocess

import pytest
import torch

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_lightseg import plan_profile, trainers
from nnunet_lightseg.baselines import Entry, baseline_rows, parse_entry
from nnunet_lightseg.cli import main
from nnunet_lightseg.registry import UnsupportedConfigurationError

MONAI_TRAINERS = [name for name in trainers.__all__ if name.startswith("nnUNetTrainerMonai")]
DATASET_JSON = {"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "a": 1, "b": 2},
                "numTraining": 2, "file_ending": ".nii.gz"}


def tiny_plans(patch=(16, 16, 16), batch_size=2):
    """A valid nnU-Net plan, written by hand, with a small patch and one downsampling step per 2x."""
    dim = len(patch)
    strides = [[1] * dim] + [[2] * dim] * 2
    conv = "torch.nn.modules.conv.Conv3d" if dim == 3 else "torch.nn.modules.conv.Conv2d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{dim}d"
    configuration = {
        "data_identifier": "tiny", "preprocessor_name": "DefaultPreprocessor", "batch_size": batch_size,
        "patch_size": list(patch), "median_image_size_in_voxels": list(patch), "spacing": [1.0] * dim,
        "normalization_schemes": ["ZScoreNormalization"] * 2, "use_mask_for_norm": [False] * 2,
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": conv,
                            "kernel_sizes": [[3] * dim] * 3, "strides": strides, "n_conv_per_stage": [2, 2, 2],
                            "n_conv_per_stage_decoder": [2, 2], "conv_bias": True, "norm_op": norm,
                            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False}
    name = "3d_fullres" if dim == 3 else "2d"
    return PlansManager({
        "dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "original_median_shape_after_transp": [16, 16, 16],
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager", "configurations": {name: configuration},
        "foreground_intensity_properties_per_channel": {}}), name


@pytest.mark.parametrize("trainer", MONAI_TRAINERS)
@pytest.mark.parametrize("patch", [(20, 24), (16, 24, 16)])
def test_monai_trainers_fit_the_plan_and_keep_the_patch_size(trainer, patch):
    manager, name = tiny_plans(patch)
    cls = getattr(trainers, trainer)
    network = cls.build_network_architecture(manager, manager.get_configuration(name), 2, 3, True)
    network.eval()
    with torch.inference_mode():
        out = network(torch.randn(1, 2, *patch))
    assert tuple(out.shape) == (1, 3, *patch)  # a single output: deep supervision is off


def test_monai_trainers_switch_deep_supervision_off_and_refuse_what_they_cannot_do():
    manager, name = tiny_plans()
    trainer = trainers.nnUNetTrainerMonaiSegResNet.__new__(trainers.nnUNetTrainerMonaiSegResNet)
    trainer.set_deep_supervision_enabled(True)  # a no-op, as in nnU-Net's Primus trainers
    with pytest.raises(UnsupportedConfigurationError, match="divide 16"):
        trainers.nnUNetTrainerMonaiVNet.build_network_architecture(manager, manager.get_configuration(name), 3, 2)


def test_list_shows_the_baselines(capsys):
    assert main(["list", "--baselines", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    entries = {row["entry"] for row in rows}
    assert {"nnUNetTrainer", "nnUNetTrainer__nnUNetResEncUNetMPlans", *MONAI_TRAINERS} == entries
    assert len(MONAI_TRAINERS) == 6 and rows == baseline_rows()


def test_entries_parse_like_nnunet_result_folders():
    assert parse_entry("nnUNetTrainer__nnUNetResEncUNetMPlans") == Entry("nnUNetTrainer", "nnUNetResEncUNetMPlans")
    assert parse_entry("nnUNetTrainerVeloxSeg").name == "nnUNetTrainerVeloxSeg"
    assert Entry("nnUNetTrainerBaseline_5epochs").is_nnunet_default
    assert not Entry("nnUNetTrainer", "nnUNetResEncUNetMPlans").is_nnunet_default
    with pytest.raises(ValueError, match="TRAINER__PLANS"):
        parse_entry("VeloxSeg")


@pytest.mark.parametrize("trainer", ["nnUNetTrainer", "nnUNetTrainerUltraLightUNet_T", "nnUNetTrainerMonaiResUNet"])
def test_measure_on_a_tiny_plan(trainer):
    manager, name = tiny_plans()
    result = plan_profile.measure(trainer, manager, manager.get_configuration(name), DATASET_JSON,
                                  torch.device("cpu"), repeats=1, warmup=0)
    assert result["patch"] == [16, 16, 16] and result["batch_size"] == 2 and result["in_channels"] == 2
    assert result["params"] > 0 and result["gmac"] > 0 and result["latency_s"] > 0 and result["train_step_s"] > 0
    assert result["gmac_per_s"] == pytest.approx(result["gmac"] / result["latency_s"])
    assert result["peak_memory_training_mb"] > 0
    assert result["training_deep_supervision"] is (trainer != "nnUNetTrainerMonaiResUNet")


def test_profile_adds_the_reference_computes_speedups_and_reports_a_failure():
    """Children are faked: the reference takes 2 s for 10 GMAC, the light model 0.5 s for 1 GMAC."""
    figures = {"nnUNetTrainer": (10.0, 2.0), "nnUNetTrainerUltraLightUNet": (1.0, 0.5)}
    calls = []

    def fake_run(command, **kwargs):
        options = json.loads(command[-1])
        calls.append(options["trainer"])
        if options["trainer"] not in figures:
            return subprocess.CompletedProcess(command, 1, "", "Traceback ...\nRuntimeError: out of memory")
        gmac, latency = figures[options["trainer"]]
        row = {"trainer": options["trainer"], "gmac": gmac, "latency_s": latency, "train_step_s": 4 * latency}
        return subprocess.CompletedProcess(command, 0, "noise\n" + json.dumps(row), "")

    config = plan_profile.ProfileConfig("Dataset999_Tiny", "3d_fullres",
                                        (Entry("nnUNetTrainerUltraLightUNet"), Entry("nnUNetTrainerMonaiUNETR")),
                                        device="cpu")
    result = plan_profile.profile(config, run=fake_run, progress=lambda line: None)
    assert calls == ["nnUNetTrainer", "nnUNetTrainerUltraLightUNet", "nnUNetTrainerMonaiUNETR"]
    rows = {row["entry"]: row for row in result["results"]}
    assert rows["nnUNetTrainerUltraLightUNet"]["speedup_vs_reference"] == pytest.approx(4.0)
    assert rows["nnUNetTrainerUltraLightUNet"]["mac_ratio_vs_reference"] == pytest.approx(10.0)
    assert rows["nnUNetTrainer"]["speedup_vs_reference"] == pytest.approx(1.0)
    assert rows["nnUNetTrainerMonaiUNETR"]["error"] == "RuntimeError: out of memory"
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["torch_threads"] >= 1
    assert "FAILED: RuntimeError: out of memory" in plan_profile.format_table(result)


def test_profile_command_keeps_the_model_form_and_explains_a_half_given_plan_form(capsys):
    assert main(["profile", "-d", "999"]) == 2
    assert "-c CONFIGURATION" in capsys.readouterr().err
    assert main(["profile", "UltraLightUNet_T"]) == 2
    assert "--in-channels" in capsys.readouterr().err
    assert main(["profile", "-d", "999", "-c", "3d_fullres", "--trainers", "VeloxSeg"]) == 2
    assert "TRAINER__PLANS" in capsys.readouterr().err
