"""`nnunet-lightseg selfcheck` (issue 17): its CPU run end to end on tiny demo data, so that the GPU
check cannot rot, and the checks that decide pass or fail."""
import json
import math
import os

import pytest
import torch

from nnunet_lightseg import cli
from nnunet_lightseg.demo_data import DemoSettings
from nnunet_lightseg.errors import UsageError
from nnunet_lightseg.selfcheck import PROBABILITY_TOLERANCE, SelfCheckConfig, finite_losses, run_selfcheck

TINY = DemoSettings(num_training=5, num_test=1, shape=(24, 32, 28), seed=2)


def test_a_nan_loss_in_the_log_fails_the_training_check(tmp_path):
    # nnU-Net trains on through a NaN loss; only its log shows it
    path = str(tmp_path / "checkpoint_final.pth")
    torch.save({"logging": {"train_losses": [0.5, float("nan")], "val_losses": [0.4, 0.3]}}, path)
    assert finite_losses(path)["finite"] is False
    torch.save({"logging": {"train_losses": [0.5, 0.2], "val_losses": [0.4, 0.3]}}, path)
    assert finite_losses(path) == {"finite": True, "train_loss": 0.2, "val_loss": 0.3}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_with_the_fix():
    with pytest.raises(UsageError, match="torch sees no GPU.*--device cpu"):
        SelfCheckConfig(device="cuda")
    with pytest.raises(UsageError, match="at least 1"):
        SelfCheckConfig(iterations=0)


def test_the_cpu_selfcheck_trains_predicts_profiles_and_reports_a_failing_trainer(tmp_path):
    config = SelfCheckConfig(output=str(tmp_path / "check"), device="cpu", demo=TINY, iterations=1, repeats=1,
                             trainers=("nnUNetTrainerVeloxSeg", "nnUNetTrainer", "nnUNetTrainerNoSuchNetwork"))
    result = run_selfcheck(config, say=lambda line: None)
    rows = {row["trainer"]: row for row in result["results"]}
    for trainer in ("nnUNetTrainerVeloxSeg", "nnUNetTrainer"):
        row = rows[trainer]
        assert row["compile_off"]["status"] == "ok" and math.isfinite(row["compile_off"]["train_loss"])
        assert row["compile_on"] == {"status": "skipped", "reason": "nnU-Net never compiles on a CPU"}
        # our CPU engine against the plain float32 graph, on a trained checkpoint
        assert row["prediction"]["max_probability_difference"] <= PROBABILITY_TOLERANCE["cpu"]
        assert row["prediction"]["labels_agree"] > 0.999
        assert row["profile"]["latency_s"] > 0 and row["profile"]["train_step_s"] > 0
    assert rows["nnUNetTrainerVeloxSeg"]["trained_as"] == "nnUNetTrainerVeloxSeg_1epoch_1iter"
    assert rows["nnUNetTrainer"]["trained_as"] == "nnUNetTrainerBaseline_1epoch_1iter"
    missing = rows["nnUNetTrainerNoSuchNetwork"]
    assert missing["compile_off"]["status"] == "failed" and "nnUNetv2_train exited" in missing["compile_off"]["error"]
    assert missing["prediction"]["status"] == "skipped"
    assert result["passed"] is False
    written = tmp_path / "check"
    assert json.loads((written / "selfcheck.json").read_text())["passed"] is False
    table = (written / "selfcheck.md").read_text()
    assert "| nnUNetTrainerVeloxSeg | ok (" in table and "Failures:" in table and "NoSuchNetwork" in table


def test_the_command_exits_1_when_a_check_fails(tmp_path, monkeypatch):
    failed = {"passed": False}

    def fake_run(config, say):
        os.makedirs(config.output)
        return failed
    monkeypatch.setattr("nnunet_lightseg.selfcheck.run_selfcheck", fake_run)
    monkeypatch.setattr("nnunet_lightseg.selfcheck.markdown", lambda result: "table")
    assert cli.main(["selfcheck", "--device", "cpu", "--output", str(tmp_path / "a")]) == cli.EXIT_FAILED
    failed["passed"] = True
    assert cli.main(["selfcheck", "--device", "cpu", "--output", str(tmp_path / "b")]) == 0
