"""The measurement modules behind docs/performance.md time what their tables say they time."""
import importlib.util
import pathlib
import subprocess

import pytest
import torch

from nnunet_lightseg import cpu_inference, registry
from nnunet_lightseg.measure import inference_steps, training_layout


def test_plain_step_runs_the_plain_graph_and_fast_steps_run_copies():
    network = registry.get("UltraLightUNet").create(registry.Plan(1, 3, (16, 16, 16), [(2, 2, 2)] * 2))
    calls = inference_steps.variants(network, 5, ours=True)
    assert list(calls) == list(inference_steps.STEPS)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        plain = calls["plain"](x)
        assert cpu_inference.copies_built(network) == 0  # the plain step ran the network itself, not the engine
        for step, call in calls.items():
            torch.testing.assert_close(call(x), plain, rtol=1e-4, atol=1e-5, msg=step)


def test_training_layout_prints_a_row_per_model(capsys):
    training_layout.main(["--models", "VeloxSeg", "--rounds", "1", "--batch", "1", "--threads", "1"])
    table = capsys.readouterr().out
    assert "| VeloxSeg |" in table and "channels_last" in table


def test_timed_runs_interleave_rounds_after_the_warm_up():
    from nnunet_lightseg.timing import median_seconds, timed_runs

    order = []
    times = timed_runs({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=2,
                       before_each=lambda key: order.append(f"zero {key}"))
    assert order == ["zero a", "a", "zero b", "b"] * 5
    assert [len(t) for t in times.values()] == [3, 3] and all(s >= 0 for t in times.values() for s in t)
    assert median_seconds(lambda: None, repeats=1, warmup=0) >= 0


@pytest.mark.integration
def test_learning_probe_reports_loss_dice_and_movement(demo_nnunet, monkeypatch, capsys):
    from nnunet_lightseg.demo_data import DEFAULT_DATASET_ID
    from nnunet_lightseg.measure import learning_probe

    env, _ = demo_nnunet
    monkeypatch.setenv("nnUNet_preprocessed", env["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_results", env["nnUNet_results"])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    learning_probe.main(["-d", str(DEFAULT_DATASET_ID), "-tr", "nnUNetTrainerUltraLightUNet_T", "--steps", "10",
                         "--threads", "1"])
    out = capsys.readouterr().out
    assert "step 10: loss" in out and "foreground" in out
    moved = dict(item.split("=") for item in out.split("moved: ")[1].split())
    assert float(moved["head"]) > 0 and "encoder.4" in moved


@pytest.mark.integration
def test_predictor_stages_times_every_way_and_splits_ours_by_stage(demo_nnunet, monkeypatch, tmp_path, capsys):
    import json
    import os

    from nnunet_lightseg.measure import predictor_stages

    env, folder = demo_nnunet
    monkeypatch.setenv("nnUNet_results", env["nnUNet_results"])  # main() points it at --work; restored after
    plans = os.path.join(env["nnUNet_preprocessed"], os.path.basename(folder), "nnUNetPlans.json")
    predictor_stages.main(["--plans", plans, "--images", os.path.join(folder, "imagesTs"), "--cases", "1",
                           "--trainers", "nnUNetTrainer", "nnUNetTrainerUltraLightUNet_T", "--settings", "fast",
                           "--threads", "1", "--onnx", "--work", str(tmp_path), "--out", str(tmp_path / "stages.json")])
    rows = json.loads((tmp_path / "stages.json").read_text())["rows"]
    assert [(r["setting"], r["trainer"]) for r in rows] == [("fast", "nnUNetTrainer"),
                                                             ("fast", "nnUNetTrainerUltraLightUNet_T")]
    for row in rows:
        assert row["stock_s"] > 0 and row["seconds"] >= row["network_s"] > 0 and row["load_model_s"] > 0
        runtimes = [r for r in ("onnxruntime", "openvino") if importlib.util.find_spec(r)]
        for runtime in runtimes:  # fold 0 exported, predicted through each runtime installed
            assert row[f"{runtime}_s"] >= row[f"{runtime}_network_s"] > 0
        for way in ("stock", "ours", *runtimes):  # every way wrote the case's segmentation
            out = tmp_path / "out" / row["trainer"] / "fast" / way
            assert len(list(out.glob("*.nii.gz"))) == 1, (way, list(out.iterdir()))
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| fast |")]
    assert len(table) == 2 and table[0].split(" | ")[5] == "1.00"  # the reference against itself, same pipeline


def test_ct_like_cases_have_air_body_and_both_classes_in_hounsfield_like_units():
    import numpy as np

    from nnunet_lightseg.measure import ct_like

    image, label = ct_like.make_case(np.random.default_rng(0), (40, 48, 44))
    assert image.shape == label.shape == (40, 48, 44) and image.dtype == np.float32
    assert set(np.unique(label)) == {0, 1, 2}
    assert abs(np.median(image[0, 0]) + 1000) < 100  # a corner is air
    assert 50 < image[label == 1].mean() < 110 and 350 < image[label == 2].mean() < 450


def test_onnx_export_check_reports_parity_and_times_both_runtimes(capsys):
    pytest.importorskip("onnxruntime")
    from nnunet_lightseg.measure import onnx_export_check
    from nnunet_lightseg.onnx_export import PARITY_TOLERANCE

    onnx_export_check.main(["--models", "VeloxSeg", "--threads", "1", "--repeats", "1"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| VeloxSeg |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[2]) < PARITY_TOLERANCE and float(cells[4]) > 0 and float(cells[5]) > 0
    if importlib.util.find_spec("openvino"):
        assert float(cells[6]) > 0 and float(cells[7]) < PARITY_TOLERANCE


def test_the_loss_scale_falls_only_where_gradients_overflow_float16():
    from nnunet_lightseg.measure.gradient_flow import synthetic_batch
    from nnunet_lightseg.measure.loss_scale import INITIAL_SCALE, settled_scale

    image, label = synthetic_batch(3, size=8, batch=1)
    torch.manual_seed(0)
    quiet = torch.nn.Conv3d(1, 3, 1)
    assert settled_scale(quiet, image, label, max_steps=4, clean=2) == (INITIAL_SCALE, 2, 0)

    class Amplified(torch.nn.Module):  # logits x 1e4: every gradient 1e4 times larger
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 3, 1)

        def forward(self, x):
            return self.conv(x) * 1e4

    scale, steps, skipped = settled_scale(Amplified(), image, label, max_steps=12, clean=2)
    assert skipped >= 1 and scale == INITIAL_SCALE / 2 ** skipped and steps == skipped + 2



def test_freed_memory_runs_each_setting_in_its_own_process(tmp_path, capsys):
    import json

    from nnunet_lightseg.measure import freed_memory

    freed_memory.main(["--models", "nnU-Net default", "VeloxSeg", "--calls", "2", "--threads", "1",
                       "--out", str(tmp_path / "rows.json")])
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["model"], r["kept"]) for r in rows] == [("nnU-Net default", False), ("nnU-Net default", True),
                                                       ("VeloxSeg", False), ("VeloxSeg", True)]
    assert all(len(r["seconds"]) == len(r["faults"]) == 2 and r["peak_mib"] > 0 for r in rows)
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| VeloxSeg")]
    assert len(table) == 2 and float(table[0].split(" | ")[-1].rstrip(" |")) > 1  # faster than nnU-Net's network


def test_unit_convs_times_both_forms_at_every_size(capsys):
    from nnunet_lightseg.measure import unit_convs

    unit_convs.main(["--threads", "1", "--rounds", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(unit_convs.SIZES)
    assert all(len(row.split(" / ")) == len(unit_convs.CHANNELS) + 1 for row in rows)


def test_narrow_convs_times_both_forms_and_splits_only_the_narrow_ones(capsys):
    from nnunet_lightseg.measure import narrow_convs

    narrow_convs.main(["--threads", "1", "--rounds", "1"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ") for line in lines if line.startswith("| ") and "->" in line]
    kinds = dict(zip((conv[0] for conv in narrow_convs.CONVS), (row[3] for row in rows)))
    assert len(rows) == len(narrow_convs.CONVS)
    assert kinds["UltraLightUNet spatial attention"] == "split"  # one output channel: with AVX2's 8-lane blocks too
    whole = ("DALight-3D encoder 1", "2 input channels", "a full output block", "8 input channels, two blocks")
    for where in whole:
        assert kinds[where] == "onednn", where


def test_engine_against_times_a_revisions_engine_beside_the_working_trees(capsys):
    from nnunet_lightseg.measure import engine_against

    if subprocess.run(["git", "-C", str(pathlib.Path(__file__).parents[1]), "rev-parse", "HEAD"],
                      capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    engine_against.main(["HEAD", "--models", "VeloxSeg", "--rounds", "1", "--threads", "1"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| VeloxSeg")]
    assert len(rows) == 1 and float(rows[0][1]) > 0 and float(rows[0][2]) > 0
    assert float(rows[0][-1].rstrip(" |")) < 1e-3  # the same network, both engines computing the same function
    with pytest.raises(SystemExit, match="give a revision"):
        engine_against.engine_at("no-such-revision")


def test_a_failing_stock_prediction_raises_instead_of_waiting_for_its_result(tmp_path):
    from nnunet_lightseg.measure import predictor_stages

    with pytest.raises(RuntimeError, match="stock prediction failed"):
        predictor_stages.stock_seconds_per_case(str(tmp_path / "no_model"), predictor_stages.SETTINGS["fast"],
                                                str(tmp_path), str(tmp_path / "out"), 1, 1)
