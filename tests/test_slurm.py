"""`benchmark --executor slurm` and `status` against a real one-node SLURM (.ci/start_slurm.sh), no mock.

Skipped with the reason where SLURM cannot be started (not root, packages missing, submitit
missing), unless NNUNET_LIGHTSEG_REQUIRE_SLURM is set, as .ci/run sets it: then that is a failure.
"""
import json
import os
import shutil
import subprocess
import time

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


def released(task: str) -> bool:
    """Ask SLURM to start a requeued task now; True once it is no longer held for its begin time."""
    subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], capture_output=True)
    held = subprocess.run(["squeue", "-h", "-j", task, "-o", "%r"], capture_output=True, text=True).stdout
    return "BeginTime" not in held


def test_a_grid_of_trainers_folds_and_seeds_runs_through_sbatch_and_is_reported(cluster, dataset_env, tmp_path):
    lines = []
    result = run_benchmark(config(tmp_path / "grid", trainers=("nnUNetTrainer", "nnUNetTrainerVeloxSeg"),
                                  folds=(0, 1), seeds=(0, 1)), say=lines.append)
    assert not result.failures and result.pending == 0, (result.failures, lines)
    assert any(line.startswith("submitted 8 tasks as SLURM array job") for line in lines)
    rows = grid_status(str(tmp_path / "grid"))
    assert len(rows) == 8 and {row["state"] for row in rows} == {"done"}
    summary = (tmp_path / "grid" / "report" / "report.csv").read_text()
    assert "nnUNetTrainerVeloxSeg_1epoch_2iters" in summary and "0,1" in summary  # the seeds column
    # nothing left to do: a rerun submits nothing and reports again
    lines.clear()
    assert not run_benchmark(config(tmp_path / "grid", trainers=("nnUNetTrainer", "nnUNetTrainerVeloxSeg"),
                                    folds=(0, 1), seeds=(0, 1)), say=lines.append).failures
    assert not any(line.startswith("submitted") for line in lines)


def test_a_cancelled_task_is_resubmitted_and_a_requeued_one_resumes(cluster, dataset_env, tmp_path):
    output = tmp_path / "resume"
    results = os.path.join(dataset_env["nnUNet_results"], DATASET,
                           f"nnUNetTrainerVeloxSeg_3epochs_2iters__nnUNetPlans__{CONFIGURATION}")
    fold = {k: os.path.join(results, f"fold_{k}") for k in (0, 1)}
    grid = config(output, trainers=("nnUNetTrainerVeloxSeg",), folds=(0, 1), epochs=3, save_every=1, wait=False,
                  slurm=SlurmOptions(cpus_per_task=1, max_parallel=1))
    assert run_benchmark(grid, say=lambda line: None).pending == 2
    tasks = {task["fold"]: task["job"] for task in read_grid(str(output))["arrays"][0]["tasks"]}
    # fold 0 runs first (one task at a time): cancel it once it has a checkpoint to resume from
    wait_for(lambda: os.path.isfile(os.path.join(fold[0], "checkpoint_latest.pth")))
    subprocess.run(["scancel", tasks[0]], check=True)
    # fold 1: requeue it by hand once it has a checkpoint; it must start again and resume
    wait_for(lambda: os.path.isfile(os.path.join(fold[1], "checkpoint_latest.pth")))
    subprocess.run(["scontrol", "requeue", tasks[1]], check=True)
    # SLURM holds a requeued job for about two minutes (reason BeginTime): let it start at once
    wait_for(lambda: released(tasks[1]), timeout=180)
    wait_for(lambda: all(row["state"] not in ("queued", "running") for row in grid_status(str(output))))
    states = {row["fold"]: row for row in grid_status(str(output))}
    assert states[1]["state"] == "done" and states[0]["state"] == "failed", states
    log_1 = (output / "logs" / f"{DATASET}__nnUNetTrainerVeloxSeg_3epochs_2iters__fold_1.log").read_text()
    assert log_1.count("$ ") == 2 and log_1.split("$ ")[-1].split("\n")[0].endswith("--c")
    finished = os.path.getmtime(os.path.join(fold[1], "checkpoint_final.pth"))
    # the rerun submits the cancelled fold only, which resumes from its checkpoint
    lines = []
    result = run_benchmark(config(output, trainers=("nnUNetTrainerVeloxSeg",), folds=(0, 1), epochs=3, save_every=1,
                                  slurm=SlurmOptions(cpus_per_task=1, max_parallel=1)), say=lines.append)
    assert not result.failures and result.pending == 0, (result.failures, lines)
    assert any(line.startswith("submitted 1 tasks") for line in lines)
    log_0 = (output / "logs" / f"{DATASET}__nnUNetTrainerVeloxSeg_3epochs_2iters__fold_0.log").read_text()
    assert log_0.split("$ ")[-1].split("\n")[0].endswith("--c")
    assert os.path.getmtime(os.path.join(fold[1], "checkpoint_final.pth")) == finished  # not trained again
    assert json.loads((output / "slurm_grid.json").read_text())["arrays"][1]["tasks"][0]["fold"] == 0


def test_a_second_dataset_joins_the_array_and_adds_a_cross_dataset_table(cluster, dataset_env, tmp_path):
    from nnunet_lightseg.demo_data import DemoSettings, write_dataset

    # a second small dataset, not yet planned: the benchmark plans it here before submitting
    write_dataset(dataset_env["nnUNet_raw"], DemoSettings(num_training=5, num_test=1, shape=(24, 28, 24), seed=3),
                  dataset_id=988, dataset_name="LightSegOther")
    lines = []
    result = run_benchmark(config(tmp_path / "two", datasets=("987", "988"),
                                  trainers=("nnUNetTrainer", "nnUNetTrainerVeloxSeg")), say=lines.append)
    assert not result.failures and result.pending == 0, (result.failures, lines)
    assert any(line.startswith("submitted 4 tasks") for line in lines)  # both datasets in one array
    assert {row["dataset"] for row in grid_status(str(tmp_path / "two"))} == {DATASET, "Dataset988_LightSegOther"}
    summary = (tmp_path / "two" / "report" / "cross_dataset.md").read_text()
    assert "rank Dataset988_LightSegOther" in summary and "nnUNetTrainerVeloxSeg_1epoch_2iters" in summary
    for dataset in (DATASET, "Dataset988_LightSegOther"):
        assert (tmp_path / "two" / "report" / dataset / "report.md").is_file()
