"""`benchmark --executor slurm` and `status` against a real one-node SLURM (.ci/start_slurm.sh), no mock.

Skipped with the reason where SLURM cannot be started (not root, packages missing, submitit
missing), unless NNUNET_LIGHTSEG_REQUIRE_SLURM is set, as .ci/run sets it: then that is a failure.
"""
import os
import shutil
import subprocess
import time
from dataclasses import replace

import pytest

from nnunet_lightseg.benchmark import BenchmarkConfig, run_benchmark
from nnunet_lightseg.slurm import SlurmOptions, grid_status, read_grid

pytestmark = pytest.mark.integration
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRE = "NNUNET_LIGHTSEG_REQUIRE_SLURM"
CONFIGURATION = "3d_fullres"
DATASET = "Dataset987_LightSegDemo"


def _unavailable() -> str | None:
    """Why SLURM cannot be used here, or None once it answers."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install 'nnunet-lightseg[slurm]')"
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0 if shutil.which("sinfo") else False:
        return None
    if os.geteuid() != 0 or not shutil.which("slurmctld"):
        return "no SLURM answers and none can be started here (needs root and slurm-wlm, munge)"
    started = subprocess.run([os.path.join(REPOSITORY, ".ci", "start_slurm.sh")], capture_output=True, text=True)
    return None if started.returncode == 0 else f".ci/start_slurm.sh failed: {started.stderr.strip()[-300:]}"


@pytest.fixture(scope="module")
def cluster():
    reason = _unavailable()
    if reason:
        if os.environ.get(REQUIRE):
            pytest.fail(f"{REQUIRE} is set but SLURM is unavailable: {reason}")
        pytest.skip(reason)


@pytest.fixture
def dataset_env(demo_nnunet, monkeypatch):
    """The small planned demo dataset as the user's nnU-Net folders, and results of its own."""
    env, _ = demo_nnunet
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_def_n_proc", "nnUNet_n_proc_DA"):
        monkeypatch.setenv(variable, env[variable])
    return env


def config(output, **changes):
    options = dict(output=str(output), datasets=("987",), configuration=CONFIGURATION, epochs=1, iterations=2,
                   executor="slurm", slurm=SlurmOptions(cpus_per_task=1, max_parallel=2), profile=False,
                   surface=False, wait=True)
    options.update(changes)
    return BenchmarkConfig(**options)


def wait_for(condition, timeout=600, step=1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(step)
    raise AssertionError("timed out waiting")


def log_of(output, trainer, fold) -> str:
    return (output / "logs" / f"{DATASET}__{trainer}__fold_{fold}.log").read_text()


def last_command(log: str) -> str:
    return log.split("$ ")[-1].split("\n")[0]


def test_a_grid_runs_through_sbatch_a_cancelled_task_is_resubmitted_and_a_requeued_one_resumes(
        cluster, dataset_env, tmp_path):
    # 2 trainers x 2 seeds, fold 0, 3 epochs x 2 iterations, a checkpoint every epoch
    output, lines = tmp_path / "grid", []
    grid = config(output, trainers=("nnUNetTrainer", "nnUNetTrainerUltraLightUNet_T"), folds=(0,), seeds=(0, 1),
                  epochs=3, save_every=1, wait=False)
    assert run_benchmark(grid, say=lines.append).pending == 4
    assert any(line.startswith("submitted 4 tasks as SLURM array job") for line in lines)
    tasks = read_grid(str(output))["arrays"][0]["tasks"]
    cancelled, requeued = tasks[0], tasks[1]  # the first two tasks start first (two at a time)
    folder = {id(t): os.path.join(t["results"], f"{t['trainer']}__nnUNetPlans__{CONFIGURATION}", f"fold_{t['fold']}")
              for t in (cancelled, requeued)}
    wait_for(lambda: os.path.isfile(os.path.join(folder[id(cancelled)], "checkpoint_latest.pth")))
    subprocess.run(["scancel", cancelled["job"]], check=True)
    wait_for(lambda: os.path.isfile(os.path.join(folder[id(requeued)], "checkpoint_latest.pth")))
    subprocess.run(["scontrol", "requeue", requeued["job"]], check=True)  # it starts again 16 s later, at the back

    def state_of(task):
        return next(row["state"] for row in grid_status(str(output))
                    if (row["entry"], row["fold"]) == (task["trainer"], task["fold"]))

    wait_for(lambda: state_of(cancelled) == "failed")
    # Run again while the rest of the grid is queued or running: only the cancelled task is
    # resubmitted; it resumes from its checkpoint; the report is built once the whole grid is done.
    lines.clear()
    result = run_benchmark(replace(grid, wait=True), say=lines.append)
    assert not result.failures and result.pending == 0, (result.failures, lines)
    assert any(line.startswith("submitted 1 tasks") for line in lines)
    assert len(grid_status(str(output))) == 4 and {row["state"] for row in grid_status(str(output))} == {"done"}
    for task in tasks:  # the cancelled and the requeued task resumed with --c; no other task ran twice
        log = log_of(output, task["trainer"], task["fold"])
        resumed = task in (cancelled, requeued)
        assert log.count("$ ") == 1 + resumed and last_command(log).endswith("--c") == resumed, task
    summary = (output / "report" / "report.csv").read_text()
    assert "nnUNetTrainerUltraLightUNet_T_3epochs_2iters" in summary and "0,1" in summary  # seeds share a row


def test_a_second_dataset_joins_the_array_and_adds_a_cross_dataset_table(cluster, dataset_env, tmp_path):
    from nnunet_lightseg.demo_data import DemoSettings, write_dataset

    # a second small dataset, not yet planned: the benchmark plans it here before submitting
    write_dataset(dataset_env["nnUNet_raw"], DemoSettings(num_training=5, num_test=1, shape=(24, 28, 24), seed=3),
                  dataset_id=988, dataset_name="LightSegOther")
    lines = []
    result = run_benchmark(config(tmp_path / "two", datasets=("987", "988"), trainers=("nnUNetTrainerUltraLightUNet_T",)),
                           say=lines.append)
    assert not result.failures and result.pending == 0, (result.failures, lines)
    assert any(line.startswith("submitted 2 tasks") for line in lines)  # both datasets in one array
    assert {row["dataset"] for row in grid_status(str(tmp_path / "two"))} == {DATASET, "Dataset988_LightSegOther"}
    summary = (tmp_path / "two" / "report" / "cross_dataset.md").read_text()
    assert "rank Dataset988_LightSegOther" in summary and "nnUNetTrainerUltraLightUNet_T_1epoch_2iters" in summary
    for dataset in (DATASET, "Dataset988_LightSegOther"):
        assert (tmp_path / "two" / "report" / dataset / "report.md").is_file()
