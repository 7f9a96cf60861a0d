"""Every default trainer through the stock nnU-Net commands, on the small demo dataset.

Plan and preprocess once (conftest's `demo_nnunet`), then for each trainer: nnUNetv2_train a
couple of iterations (a `_1epoch` schedule), nnUNetv2_predict the held-out cases, and
nnUNetv2_evaluate_simple. Add a model's trainer to CLI_TRAINERS with its configuration.
"""
import json
import os

import pytest

from cli_helpers import IN_PROCESS_AUGMENTATION, run
from nnunet_lightseg.demo_data import DEFAULT_DATASET_ID

pytestmark = pytest.mark.integration

DATASET = str(DEFAULT_DATASET_ID)
SHORT = {"NNUNET_LIGHTSEG_ITERATIONS": "2", "NNUNET_LIGHTSEG_VAL_ITERATIONS": "1", **IN_PROCESS_AUGMENTATION}

CLI_TRAINERS = [
    ("nnUNetTrainerUltraLightUNet", "3d_fullres"),
    ("nnUNetTrainerUltraLightUNet_T", "2d"),
    ("nnUNetTrainerLightMedSeg", "3d_fullres"),
    ("nnUNetTrainerDALight3D", "3d_fullres"),
    ("nnUNetTrainerVeloxSeg", "3d_fullres"),
]


def train(env, trainer, configuration, *extra):
    return run(["nnUNetv2_train", DATASET, configuration, "0", "-tr", trainer, "-device", "cpu", *extra],
               {**env, **SHORT})


def predict_and_evaluate(env, folder, trainer, configuration, out):
    run(["nnUNetv2_predict", "-i", os.path.join(folder, "imagesTs"), "-o", out, "-d", DATASET, "-c", configuration,
         "-tr", trainer, "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], env)
    run(["nnUNetv2_evaluate_simple", os.path.join(folder, "labelsTs"), out, "-l", "1", "2", "-np", "1"], env)
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert len(summary["metric_per_case"]) == len(os.listdir(os.path.join(folder, "labelsTs")))
    return summary


@pytest.mark.parametrize("trainer, configuration", CLI_TRAINERS)
def test_stock_commands_train_predict_and_evaluate(demo_nnunet, tmp_path, trainer, configuration):
    env, folder = demo_nnunet
    short = f"{trainer}_1epoch"
    log = train(env, short, configuration)
    assert f"Using trainer '{short}'" in log and "Training done." in log
    results = os.path.join(env["nnUNet_results"], f"Dataset{DATASET}_LightSegDemo", f"{short}__nnUNetPlans__{configuration}")
    assert os.path.isfile(os.path.join(results, "fold_0", "checkpoint_final.pth"))
    assert os.path.isfile(os.path.join(results, "fold_0", "validation", "summary.json"))
    summary = predict_and_evaluate(env, folder, short, configuration, str(tmp_path / "predictions"))
    assert 0.0 <= summary["foreground_mean"]["Dice"] <= 1.0


def test_resume_with_c_and_validate_with_val(demo_nnunet):
    env, _ = demo_nnunet
    trainer = "nnUNetTrainerUltraLightUNet_T_2epochs"
    results = os.path.join(env["nnUNet_results"], f"Dataset{DATASET}_LightSegDemo", f"{trainer}__nnUNetPlans__3d_fullres",
                           "fold_0")
    # train, then pretend the run stopped after its first epoch: keep a 'latest' checkpoint only
    train(env, trainer, "3d_fullres")
    import torch
    checkpoint = torch.load(os.path.join(results, "checkpoint_final.pth"), weights_only=False)
    checkpoint["current_epoch"] = 1
    torch.save(checkpoint, os.path.join(results, "checkpoint_latest.pth"))
    os.remove(os.path.join(results, "checkpoint_final.pth"))
    log = train(env, trainer, "3d_fullres", "--c")
    assert "Epoch 1" in log and "Epoch 0" not in log and "Training done." in log
    os.remove(os.path.join(results, "validation", "summary.json"))
    train(env, trainer, "3d_fullres", "--val")
    assert os.path.isfile(os.path.join(results, "validation", "summary.json"))


def test_a_3d_only_trainer_on_2d_fails_before_training_with_a_clear_message(demo_nnunet):
    env, _ = demo_nnunet
    with pytest.raises(AssertionError) as failure:
        train(env, "nnUNetTrainerLightMedSeg_1epoch", "2d")
    assert "3d_fullres" in str(failure.value) and "Epoch 0" not in str(failure.value)
