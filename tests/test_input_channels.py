"""The input-channel check of our trainers' networks: named before the network runs, engine on or off."""
import json
import os
import shutil

import pytest
import torch

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_lightseg import cpu_inference, trainers
from nnunet_lightseg.trainers.input_channels import InputChannelsError, channel_names, check_case

PATCH = (16, 16, 16)
TRAINER = trainers.nnUNetTrainerUltraLightUNet_T


def network_for_two_channels():
    plans = PlansManager({
        "dataset_name": "Dataset001_Test", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1] * 3,
        "original_median_shape_after_transp": list(PATCH), "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "x",
        "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
        "configurations": {"c": {"data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                                 "patch_size": list(PATCH), "spacing": [1] * 3, "use_mask_for_norm": [False] * 2,
                                 "normalization_schemes": ["ZScoreNormalization"] * 2,
                                 "architecture": {"network_class_name": "x", "_kw_requires_import": [],
                                                  "arch_kwargs": {"strides": [[1] * 3] + [[2] * 3] * 2}}}}})
    return TRAINER.build_network_architecture(plans, plans.get_configuration("c"), 2, 3, False).eval()


@pytest.fixture
def model_folder(tmp_path, monkeypatch):
    """nnUNet_results with the model's dataset.json, as nnU-Net's predictor has it."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "none"))
    folder = tmp_path / "Dataset001_Test" / f"{TRAINER.__name__}__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"1": "ADC", "0": "T2"}, "labels": {}}))
    return folder


@pytest.mark.parametrize("fast", [True, False])
def test_a_case_with_a_missing_channel_is_named_before_the_network_runs(model_folder, fast):
    network = network_for_two_channels()
    ran = []
    network.register_forward_hook(lambda *args: ran.append(True))
    with torch.inference_mode():
        assert network(torch.randn(1, 2, *PATCH)).shape == (1, 3, *PATCH)
        assert cpu_inference.copies_built(network) == 1  # the trainer's network predicts through the engine
        with cpu_inference.plain_path() if not fast else torch.inference_mode():
            with pytest.raises(InputChannelsError) as error:
                network(torch.randn(1, 1, *PATCH))
    assert str(error.value).startswith("the model expects 2 input channels (T2, ADC, from dataset.json), "
                                       "but the input has 1: give every case one image file per channel")
    assert ran == [True]  # the network ran for the good input only


def test_without_the_model_folder_the_counts_are_still_given(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    with pytest.raises(InputChannelsError, match=r"^the model expects 2 input channels, but the input has 3: "):
        network_for_two_channels()(torch.randn(1, 3, *PATCH))


def test_our_tools_name_the_case_and_its_files():
    dataset_json = {"channel_names": {"0": "T2", "1": "ADC"}}
    check_case("case_007", ["case_007_0000.nii.gz", "case_007_0001.nii.gz"], 2, dataset_json)
    with pytest.raises(InputChannelsError, match=r"expects 2 input channels \(T2, ADC, from dataset.json\), but case "
                                                 r"case_007 has 1 \(case_007_0000.nii.gz\): give every case"):
        check_case("case_007", ["case_007_0000.nii.gz"], 1, dataset_json)
    assert channel_names({"modality": {"0": "CT"}}) == ["CT"]


def test_the_per_case_predictor_script_names_the_case_and_its_files(demo_nnunet, tmp_path):
    from nnunet_lightseg.measure import predictor_per_case

    env, folder = demo_nnunet
    images = tmp_path / "images"
    shutil.copytree(os.path.join(folder, "imagesTs"), images)
    first = sorted(images.glob("*_0001.nii.gz"))[0]
    first.unlink()
    case = first.name[:-len("_0001.nii.gz")]
    plans = os.path.join(env["nnUNet_preprocessed"], os.path.basename(folder), "nnUNetPlans.json")
    with pytest.raises(InputChannelsError, match=rf"expects 2 input channels \(.*\), but case {case} has 1 "
                                                 rf"\(.*{case}_0000.nii.gz\)"):
        predictor_per_case.main(["--plans", plans, "--images", str(images), "--cases", "1", "--models",
                                 "UltraLightUNet"])
