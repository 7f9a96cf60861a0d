"""The benchmark killed in the middle of a real fold (SIGTERM, then SIGINT) and run again.

The signals go to the benchmark's process group, as Ctrl-C in a terminal sends them. The trainer
is UltraLightUNet_T on 2 iterations per epoch with a checkpoint every epoch (nnU-Net's default
is every 50) and no test-time mirroring (a shorter validation): a test-only subclass that nnU-Net
finds through `nnUNet_extTrainer`.
"""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from nnunet_lightseg import benchmark
from nnunet_lightseg.demo_data import DEFAULT_DATASET_ID

pytestmark = pytest.mark.integration

EPOCHS, ITERATIONS = 3, 2  # SIGTERM in epoch 1, SIGINT in epoch 2 (each after a checkpoint)
TRAINER = f"nnUNetTrainerFaultTest_{EPOCHS}epochs_{ITERATIONS}iters"
TRAINER_MODULE = f'''
from nnunet_lightseg import trainers


class {TRAINER}(trainers.nnUNetTrainerUltraLightUNet_T_{EPOCHS}epochs_{ITERATIONS}iters):
    """A checkpoint every epoch (the package's trainers rename it into place: a kill mid-write leaves the previous one)."""

    def __init__(self, plans, configuration, fold, dataset_json, device=None):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.save_every = 1

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, patch_size, None
'''


@pytest.fixture
def fault_env(demo_nnunet, tmp_path):
    env, _ = demo_nnunet
    (tmp_path / "trainers").mkdir()
    (tmp_path / "trainers" / "fault_test_trainer.py").write_text(TRAINER_MODULE)
    return {**env, "nnUNet_results": str(tmp_path / "results"), "nnUNet_extTrainer": str(tmp_path / "trainers"),
            "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"}


def benchmark_command(output):
    return [sys.executable, "-m", "nnunet_lightseg.cli", "benchmark", "-d", str(DEFAULT_DATASET_ID), "-c",
            "3d_fullres", "--trainers", "nnUNetTrainerFaultTest", "--epochs", str(EPOCHS), "--iterations",
            str(ITERATIONS), "--folds", "0", "--no-profile", "--no-surface", "--output", output]


def fold_folder(env):
    return os.path.join(env["nnUNet_results"], f"Dataset{DEFAULT_DATASET_ID}_LightSegDemo",
                        f"{TRAINER}__nnUNetPlans__3d_fullres", "fold_0")


def wait_for(condition, seconds, what):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def group_alive(group: int) -> bool:
    """Whether a process of `group` still runs (zombies do not count)."""
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def checkpoint_epoch(env) -> int:
    """The epoch the fold's checkpoint_latest goes on from; 0 when there is none."""
    path = os.path.join(fold_folder(env), "checkpoint_latest.pth")
    return torch.load(path, map_location="cpu", weights_only=False)["current_epoch"] if os.path.isfile(path) else 0


def interrupt_after_a_checkpoint(env, output, stop) -> int:
    """Run the benchmark; send `stop` to its process group once the fold has a new checkpoint, check
    what it says and records, and return the epoch that checkpoint goes on from."""
    before = checkpoint_epoch(env)
    with open(output + ".stderr", "w+") as errors:
        process = subprocess.Popen(benchmark_command(output), env=env, stdout=subprocess.DEVNULL, stderr=errors,
                                   start_new_session=True)
        wait_for(lambda: checkpoint_epoch(env) > before or process.poll() is not None, 300, "a checkpoint")
        os.killpg(process.pid, stop)
        status = process.wait(timeout=60)
        wait_for(lambda: not group_alive(process.pid), 30, "nnUNetv2_train to stop")
        errors.seek(0)
        message = errors.read()
    name = signal.Signals(stop).name
    assert status == 128 + stop and "Traceback" not in message, message  # the shell's convention
    assert message.strip().splitlines()[-1].endswith(
        "run the same command again to resume (finished folds are skipped, an interrupted one goes on from "
        "its last checkpoint)."), message
    assert f"stopped by {name} during {TRAINER} fold 0" in message
    record = benchmark.load_state(os.path.join(output, benchmark.STATE_FILE))[f"{TRAINER}/fold_0"]
    assert record["interrupted"] == name and record["epochs"] == EPOCHS  # valid JSON of the expected shape
    assert not os.path.exists(os.path.join(fold_folder(env), "checkpoint_final.pth"))
    return checkpoint_epoch(env)


def first_epoch_of_the_last_run(env) -> int:
    log = sorted(glob.glob(os.path.join(fold_folder(env), "training_log_*.txt")))[-1]
    return int(re.search(r"Epoch (\d+)\s*$", open(log).read(), re.MULTILINE)[1])


def run_to_the_end(env, output) -> str:
    done = subprocess.run(benchmark_command(output), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_killed_mid_fold_the_same_command_resumes_from_the_checkpoint(fault_env, tmp_path):
    output = str(tmp_path / "bench")
    assert interrupt_after_a_checkpoint(fault_env, output, signal.SIGTERM) == 1
    # The same command goes on from epoch 1 (not from scratch) until Ctrl-C after the next checkpoint.
    assert interrupt_after_a_checkpoint(fault_env, output, signal.SIGINT) == 2
    assert first_epoch_of_the_last_run(fault_env) == 1

    run_to_the_end(fault_env, output)
    assert first_epoch_of_the_last_run(fault_env) == 2
    final = os.path.join(fold_folder(fault_env), "checkpoint_final.pth")
    assert os.path.isfile(os.path.join(fold_folder(fault_env), "validation", "summary.json"))
    assert "interrupted" not in benchmark.load_state(os.path.join(output, benchmark.STATE_FILE))[f"{TRAINER}/fold_0"]
    written = os.path.getmtime(final)

    assert "fold 0: finished earlier, skipped" in run_to_the_end(fault_env, output)  # not trained again
    assert os.path.getmtime(final) == written
