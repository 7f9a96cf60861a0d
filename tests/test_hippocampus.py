"""Real data end to end: MSD Hippocampus through the stock converter, planner, trainer, predictor
and evaluator. Reads ../shared/data/Task04_Hippocampus (never copied into the repository) and
skips where it is absent.

A subset keeps it short: 20 training cases (two of them with float32 label files and a mix of
uint8 and float32 images, as distributed) and 3 held-out cases to predict. This checks that the
pipeline runs on real files; how well the networks learn is a benchmark (docs/benchmarks.md).
"""
import json
import os

import pytest

from cli_helpers import IN_PROCESS_AUGMENTATION, SHARED_DATA, clean_env, run

pytestmark = pytest.mark.realdata

MSD = os.path.join(SHARED_DATA, "Task04_Hippocampus")
# float32 labels (003, 243), uint8 images (001, 033), then the first other cases in the listing
REQUIRED = ["hippocampus_003", "hippocampus_243", "hippocampus_001", "hippocampus_033"]
NUM_TRAINING, NUM_HELD_OUT = 20, 3


def choose_cases(listed: list[str]) -> tuple[list[str], list[str]]:
    others = [c for c in sorted(listed) if c not in REQUIRED]
    extra = NUM_TRAINING - len(REQUIRED)
    return REQUIRED + others[:extra], others[extra:extra + NUM_HELD_OUT]


@pytest.fixture(scope="module")
def msd_subset(tmp_path_factory):
    if not os.path.isfile(os.path.join(MSD, "dataset.json")):
        pytest.skip(f"real data not found at {MSD} (see ../shared/data/README.md)")
    listed = [e["image"].split("/")[-1][:-len(".nii.gz")]
              for e in json.load(open(os.path.join(MSD, "dataset.json")))["training"]]
    missing = [c for c in REQUIRED if c not in listed]
    if missing:
        pytest.skip(f"cases {missing} are not in {MSD}")
    training, held_out_cases = choose_cases(listed)
    root = tmp_path_factory.mktemp("hippocampus")
    task = root / "Task04_Hippocampus"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    description = json.load(open(os.path.join(MSD, "dataset.json")))
    description["training"] = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in training]
    description["numTraining"], description["test"], description["numTest"] = len(training), [], 0
    (task / "dataset.json").write_text(json.dumps(description))
    for case in training:  # links, not copies: the data stays where it is
        for sub in ("imagesTr", "labelsTr"):
            os.symlink(os.path.join(MSD, sub, f"{case}.nii.gz"), task / sub / f"{case}.nii.gz")
    held_out = root / "held_out_images"
    held_out_labels = root / "held_out_labels"
    held_out.mkdir()
    held_out_labels.mkdir()
    for case in held_out_cases:
        os.symlink(os.path.join(MSD, "imagesTr", f"{case}.nii.gz"), held_out / f"{case}_0000.nii.gz")
        os.symlink(os.path.join(MSD, "labelsTr", f"{case}.nii.gz"), held_out_labels / f"{case}.nii.gz")
    return root, task, training, held_out, held_out_labels


def test_hippocampus_convert_plan_train_predict_evaluate(msd_subset, tmp_path):
    root, task, training, held_out, held_out_labels = msd_subset
    env = clean_env(str(root))
    run(["nnUNetv2_convert_MSD_dataset", "-i", str(task), "-np", "1"], env)
    run(["nnUNetv2_plan_and_preprocess", "-d", "4", "-c", "3d_fullres", "-np", "1", "--verify_dataset_integrity"], env)
    plans = json.load(open(os.path.join(env["nnUNet_preprocessed"], "Dataset004_Hippocampus", "nnUNetPlans.json")))
    assert len(plans["configurations"]["3d_fullres"]["patch_size"]) == 3
    # a small validation fold keeps nnU-Net's final validation short
    splits = [{"train": training[:-4], "val": training[-4:]}]
    with open(os.path.join(env["nnUNet_preprocessed"], "Dataset004_Hippocampus", "splits_final.json"), "w") as f:
        json.dump(splits, f)

    trainer = "nnUNetTrainerUltraLightUNet_1epoch"
    log = run(["nnUNetv2_train", "4", "3d_fullres", "0", "-tr", trainer, "-device", "cpu"],
              {**env, "NNUNET_LIGHTSEG_ITERATIONS": "3", "NNUNET_LIGHTSEG_VAL_ITERATIONS": "1", **IN_PROCESS_AUGMENTATION})
    assert "Training done." in log and "Mean Validation Dice" in log
    out = str(tmp_path / "predictions")
    run(["nnUNetv2_predict", "-i", str(held_out), "-o", out, "-d", "4", "-c", "3d_fullres", "-tr", trainer, "-f", "0",
         "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], env)
    run(["nnUNetv2_evaluate_simple", str(held_out_labels), out, "-l", "1", "2", "-np", "1"], env)
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert len(summary["metric_per_case"]) == NUM_HELD_OUT
    assert 0.0 <= summary["foreground_mean"]["Dice"] <= 1.0
