"""The report on hand-written nnU-Net results with known Dice values."""
import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from nnunet_lightseg import output_folder, report, stats
from nnunet_lightseg.cli import main

CONFIGURATION = "3d_fullres"
# Dice per case (label 1, label 2) for two folds of four cases; the reference is nnUNetTrainer.
DICE = {
    "nnUNetTrainer": {0: [(0.9, 0.8), (0.8, 0.8), (0.7, 0.9), (0.9, 0.9)],
                      1: [(0.8, 0.7), (0.9, 0.8), (0.6, 0.7), (0.8, 0.8)]},
    "nnUNetTrainerUltraLightUNet": {0: [(0.8, 0.7), (0.7, 0.8), (0.7, 0.7), (0.8, 0.8)],
                                    1: [(0.7, 0.7), (0.8, 0.6), (0.5, 0.6), (0.7, 0.7)]},
    "nnUNetTrainerVeloxSeg": {0: [(0.9, 0.9), (0.8, 0.7), (0.7, 0.9), (0.9, 0.8)]},
}


def write_summary(path, fold, values, files_folder=None):
    cases = []
    for i, (d1, d2) in enumerate(values):
        name = f"case_{fold}_{i}.nii.gz"
        cases.append({"metrics": {"1": {"Dice": d1}, "2": {"Dice": d2}},
                      "prediction_file": os.path.join(files_folder or path, "pred", name),
                      "reference_file": os.path.join(files_folder or path, "gt", name)})
    summary = {"foreground_mean": {"Dice": float(np.mean(values))}, "metric_per_case": cases,
               "mean": {"1": {"Dice": float(np.mean([v[0] for v in values]))},
                        "2": {"Dice": float(np.mean([v[1] for v in values]))}}}
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump(summary, f)


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "Dataset999_Tiny"
    for trainer, folds in DICE.items():
        for fold, values in folds.items():
            write_summary(str(folder / f"{trainer}__nnUNetPlans__{CONFIGURATION}" / f"fold_{fold}" / "validation"),
                          fold, values)
    (folder / f"nnUNetTrainerMonaiUNETR__nnUNetPlans__{CONFIGURATION}" / "fold_0").mkdir(parents=True)
    (folder / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0").mkdir(parents=True)  # another configuration: ignored
    return str(folder)


def per_case_foreground(trainer):
    return {f"case_{fold}_{i}": (a + b) / 2
            for fold, values in DICE[trainer].items() for i, (a, b) in enumerate(values)}


def test_summary_table_has_mean_and_std_over_folds(results):
    built = report.build(results, CONFIGURATION, surface=False, errors={"nnUNetTrainerDALight3D": "exit 1"})
    table = built["summary"].set_index("model")
    assert list(table.index) == ["nnUNetTrainer", "nnUNetTrainerMonaiUNETR", "nnUNetTrainerUltraLightUNet",
                                 "nnUNetTrainerVeloxSeg", "nnUNetTrainerDALight3D"]
    # nnUNetTrainer: label 1 fold means 0.825 and 0.775 -> mean 0.8, sample std 0.0354
    assert table.loc["nnUNetTrainer", "Dice 1"] == "0.8000 ± 0.0354"
    assert table.loc["nnUNetTrainer", "Dice mean"] == "0.8000 ± 0.0530"  # fold means 0.8375, 0.7625
    assert table.loc["nnUNetTrainerVeloxSeg", "Dice mean"] == "0.8250"  # one fold: no std
    assert table.loc["nnUNetTrainerVeloxSeg", "folds"] == "0"
    assert table.loc["nnUNetTrainerMonaiUNETR", "error"] == "no finished fold"
    assert table.loc["nnUNetTrainerDALight3D", "error"] == "exit 1"
    assert built["reference"] == "nnUNetTrainer"


def test_paired_tests_match_scipy_and_holm(results):
    built = report.build(results, CONFIGURATION, surface=False)
    comparisons = built["comparisons"].set_index("model")
    reference = per_case_foreground("nnUNetTrainer")
    p = {}
    for model in ("nnUNetTrainerUltraLightUNet", "nnUNetTrainerVeloxSeg"):
        mine = per_case_foreground(model)
        cases = sorted(mine)
        x, y = np.array([mine[c] for c in cases]), np.array([reference[c] for c in cases])
        p[model] = scipy_stats.wilcoxon(x, y).pvalue
        assert comparisons.loc[model, "paired_cases"] == len(cases)
        assert comparisons.loc[model, "mean_difference"] == pytest.approx(np.mean(x - y))
        assert comparisons.loc[model, "wilcoxon_p"] == pytest.approx(p[model])
        low, high = comparisons.loc[model, "difference_ci_low"], comparisons.loc[model, "difference_ci_high"]
        assert low <= np.mean(x - y) <= high
    adjusted = multipletests([p["nnUNetTrainerUltraLightUNet"], p["nnUNetTrainerVeloxSeg"]], method="holm")[1]
    assert comparisons.loc["nnUNetTrainerUltraLightUNet", "holm_p"] == pytest.approx(adjusted[0])
    assert comparisons.loc["nnUNetTrainerVeloxSeg", "holm_p"] == pytest.approx(adjusted[1])
    # UltraLightUNet is worse on every one of the 8 cases: the exact two-sided p is 2/2^8
    assert p["nnUNetTrainerUltraLightUNet"] == pytest.approx(2 / 256)
    assert comparisons.loc["nnUNetTrainerUltraLightUNet", "significant"]
    assert comparisons.loc["nnUNetTrainerUltraLightUNet", "mean_difference"] == pytest.approx(-1.5 / 16)


def test_stats_helpers():
    assert stats.pareto_front([1, 2, 3, 4], [0.5, 0.4, 0.7, 0.7]) == [0, 2]
    assert stats.holm([0.01, float("nan"), 0.04]) == pytest.approx([0.02, float("nan"), 0.04], nan_ok=True)
    assert stats.bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)


def test_files_profile_merge_and_plots(results, tmp_path):
    profile = {"reference": "nnUNetTrainer", "device": "cpu",
               "machine": {"torch_threads": 1, "cpu": "test", "torch": "x"},
               "results": [{"entry": "nnUNetTrainer", "params": 3e7, "gmac": 100.0, "latency_s": 1.0,
                            "speedup_vs_reference": 1.0, "mac_ratio_vs_reference": 1.0},
                           {"entry": "nnUNetTrainerUltraLightUNet_5epochs", "params": 5e5, "gmac": 3.0,
                            "latency_s": 0.5, "speedup_vs_reference": 2.0, "mac_ratio_vs_reference": 33.3,
                            "peak_memory_inference_mb": 900.0, "peak_memory_training_mb": 1500.0},
                           {"entry": "nnUNetTrainerVeloxSeg", "error": "RuntimeError: boom"}]}
    built = report.build(results, CONFIGURATION, surface=False, profile=profile)
    table = built["summary"].set_index("model")
    assert table.loc["nnUNetTrainerUltraLightUNet", "GMAC"] == 3.0  # the schedule suffix does not matter
    assert table.loc["nnUNetTrainerUltraLightUNet", "speed-up"] == 2.0
    assert table.loc["nnUNetTrainerUltraLightUNet", "peak MB training"] == 1500.0
    assert any("peak resident set size" in note for note in built["notes"])
    assert pd.isna(table.loc["nnUNetTrainerVeloxSeg", "GMAC"])
    written = report.write(built, str(tmp_path / "out"), "Tiny")
    names = {os.path.basename(p) for p in written}
    assert {"report.md", "report.csv", "report.html", "per_case.csv", "statistics.csv", "dice_per_case.png",
            "dice_vs_gmac.png", "dice_vs_params.png"} <= names
    page = open(tmp_path / "out" / "report.html").read()
    assert page.count("data:image/png;base64,") == 3 and "nnUNetTrainerVeloxSeg" in page
    assert "Holm" in open(tmp_path / "out" / "report.md").read()


def test_surface_metrics_in_the_image_spacing(tmp_path):
    import SimpleITK as sitk

    folder = tmp_path / "Dataset999_Tiny"
    files = tmp_path / "files"
    reference = np.zeros((10, 12, 12), np.uint8)
    reference[3:7, 3:9, 3:9] = 1
    reference[3:7, 2, 2] = 2
    prediction = reference.copy()
    prediction[3:7, 3:9, 9] = 1  # label 1 one voxel (2 mm along x) too wide on one side
    for sub, array in (("gt", reference), ("pred", prediction)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((2.0, 1.0, 3.0))  # x, y, z
        os.makedirs(files / sub, exist_ok=True)
        sitk.WriteImage(image, str(files / sub / "case_0_0.nii.gz"))
    write_summary(str(folder / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}" / "fold_0" / "validation"), 0,
                  [(0.9, 1.0)], files_folder=str(files))
    built = report.build(str(folder), CONFIGURATION, surface=True, tolerance_mm=1.0)
    cases = built["cases"].set_index("label")
    assert cases.loc["1", "HD95"] == pytest.approx(2.0)  # the extra slab is 2 mm away in x
    assert cases.loc["2", "HD95"] == pytest.approx(0.0) and cases.loc["2", "NSD"] == pytest.approx(1.0)
    assert 0 < cases.loc["1", "NSD"] < 1
    assert cases.loc["1", "spacing"] == "3x1x2"
    assert any("MONAI" in note and "3x1x2" in note for note in built["notes"])


def test_report_command_explains_missing_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    (tmp_path / "Dataset999_Tiny").mkdir()
    assert main(["report", "-d", "Dataset999_Tiny", "-c", CONFIGURATION]) == 1
    assert "nnunet-lightseg report: no results of configuration" in capsys.readouterr().err
    write_summary(str(tmp_path / "Dataset999_Tiny" / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}" / "fold_0" /
                      "validation"), 0, [(0.9, 0.8)])
    assert main(["report", "-d", "Dataset999_Tiny", "-c", CONFIGURATION, "--reference", "nnUNetTrainerX",
                 "--no-surface", "--output", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "reference 'nnUNetTrainerX' has no finished fold" in error and len(error.strip().splitlines()) == 1
    monkeypatch.delenv("nnUNet_results")
    assert main(["report", "-d", "Dataset999_Tiny", "-c", CONFIGURATION]) == 1
    assert "nnUNet_results is not set" in capsys.readouterr().err


def test_report_config_reads_the_profile_beside_the_results(results, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", os.path.dirname(results))
    profile = {"reference": "nnUNetTrainer", "device": "cpu", "machine": {"torch_threads": 1, "cpu": "t", "torch": "x"},
               "results": [{"entry": "nnUNetTrainer", "params": 3e7, "gmac": 100.0, "latency_s": 1.0}]}
    with open(os.path.join(results, f"lightseg_profile_{CONFIGURATION}.json"), "w") as f:
        json.dump(profile, f)
    built, written = report.make_report(report.ReportConfig("Dataset999_Tiny", CONFIGURATION, surface=False,
                                                            output=str(tmp_path / "out")))
    assert built["summary"].set_index("model").loc["nnUNetTrainer", "GMAC"] == 100.0
    assert str(tmp_path / "out" / "report.html") in written
    with pytest.raises(report.ReportError, match="does not exist"):
        report.make_report(report.ReportConfig("Dataset999_Tiny", CONFIGURATION, profile_path=str(tmp_path / "no")))


def test_a_results_folder_without_a_finished_fold_is_a_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    dataset = tmp_path / "Dataset999_Tiny"
    (dataset / f"nnUNetTrainerVeloxSeg__nnUNetPlans__{CONFIGURATION}" / "fold_0").mkdir(parents=True)  # failed
    training = dataset / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}" / "fold_0"
    training.mkdir(parents=True)
    (training / "checkpoint_latest.pth").touch()  # still training
    assert main(["report", "-d", "Dataset999_Tiny", "-c", CONFIGURATION, "--output", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out.count("no finished fold") == 2
    table = pd.read_csv(tmp_path / "out" / "report.csv").set_index("model")
    assert list(table["error"]) == ["no finished fold"] * 2 and list(table["Dice mean"]) == ["-"] * 2


def test_report_refuses_an_output_folder_that_is_not_ours_and_force_moves_it_aside(results, tmp_path, monkeypatch,
                                                                                    capsys):
    monkeypatch.setenv("nnUNet_results", os.path.dirname(results))
    out = tmp_path / "out"
    out.mkdir()
    mine = b"# my notes, not a report\n"
    (out / "report.md").write_bytes(mine)
    command = ["report", "-d", "Dataset999_Tiny", "-c", CONFIGURATION, "--no-surface", "--output", str(out)]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "did not write" in error and "--force" in error and len(error.strip().splitlines()) == 1
    assert os.listdir(out) == ["report.md"] and (out / "report.md").read_bytes() == mine

    assert main(command + ["--force"]) == 0
    [aside] = [p for p in out.iterdir() if p.name.startswith(output_folder.ASIDE_PREFIX)]
    assert (aside / "report.md").read_bytes() == mine and output_folder.is_ours(str(out))
    assert (out / "report.md").read_bytes() != mine and f"moved what {out} held" in capsys.readouterr().out
    assert main(command) == 0  # ours now: rewritten without --force
    assert len([p for p in out.iterdir() if p.name.startswith(output_folder.ASIDE_PREFIX)]) == 1


def test_seeds_share_a_row_and_pair_on_case_and_seed(tmp_path):
    # two seeds of each trainer, one fold: mean ± std over the (seed, fold) pairs; the paired test
    # sees each case once per seed
    folder = tmp_path / "Dataset999_Tiny"
    seeds = {"nnUNetTrainerBaseline_1epoch_2iters": {0: [(0.9, 0.7)] * 4, 1: [(0.7, 0.5)] * 4},
             "nnUNetTrainerVeloxSeg_1epoch_2iters": {0: [(0.6, 0.6), (0.5, 0.5), (0.4, 0.4), (0.6, 0.4)],
                                                     1: [(0.8, 0.8), (0.7, 0.7), (0.6, 0.6), (0.7, 0.5)]}}
    for trainer, by_seed in seeds.items():
        for seed, values in by_seed.items():
            write_summary(str(folder / f"{trainer}_seed{seed}__nnUNetPlans__{CONFIGURATION}" / "fold_0" / "validation"),
                          0, values)
    built = report.build(str(folder), CONFIGURATION, surface=False)
    table = built["summary"].set_index("model")
    assert list(table.index) == list(seeds) and list(table["seeds"]) == ["0,1", "0,1"]
    assert table.loc["nnUNetTrainerBaseline_1epoch_2iters", "Dice mean"] == "0.7000 ± 0.1414"  # 0.8 and 0.6
    assert built["reference"] == "nnUNetTrainerBaseline_1epoch_2iters"
    row = built["comparisons"].set_index("model").loc["nnUNetTrainerVeloxSeg_1epoch_2iters"]
    assert row["paired_cases"] == 8  # 4 cases x 2 seeds
    assert set(built["cases"]["seed"]) == {"0", "1"}


def test_cross_dataset_table_ranks_and_counts_wins_ties_losses(results, tmp_path):
    first = report.build(results, CONFIGURATION, surface=False)
    # a second dataset where VeloxSeg is clearly better than the reference on every case
    folder = tmp_path / "Dataset998_Other"
    for trainer, value in (("nnUNetTrainer", 0.5), ("nnUNetTrainerVeloxSeg", 0.9)):
        write_summary(str(folder / f"{trainer}__nnUNetPlans__{CONFIGURATION}" / "fold_0" / "validation"), 0,
                      [(value + 0.01 * i, value + 0.01 * i) for i in range(8)])
    second = report.build(str(folder), CONFIGURATION, surface=False)
    table = report.cross_dataset_table({"Dataset999_Tiny": first, "Dataset998_Other": second}).set_index("model")
    assert table.loc["nnUNetTrainerVeloxSeg", "rank Dataset998_Other"] == 1
    assert table.loc["nnUNetTrainer", "wins"] == "-"  # the reference itself
    velox = table.loc["nnUNetTrainerVeloxSeg"]
    assert velox["datasets"] == 2 and velox["wins"] + velox["ties"] + velox["losses"] == 2 and velox["wins"] >= 1
    assert table.loc["nnUNetTrainerUltraLightUNet", "datasets"] == 1
    assert list(table.index)[0] == "nnUNetTrainerVeloxSeg"  # sorted by mean rank
