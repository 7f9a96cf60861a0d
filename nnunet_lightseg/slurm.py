"""`benchmark --executor slurm`: the grid as SLURM array jobs through submitit, and `status`.

Each (trainer, fold) still to do is one task of one array job (`submitit`, array throttle
`max_parallel`); the task runs the stock `nnUNetv2_train` exactly as the local executor does,
choosing between a new run, `--c` and `--val` from the fold's files when it starts
(`folds.fold_state`). A task that times out or is pre-empted is requeued by submitit
(`Checkpointable`), and so is one requeued by hand (`scontrol requeue`); either way it starts again
and resumes from `checkpoint_latest.pth`, losing the epochs since that was written (nnU-Net: every
50; `--save-every` shortens that).

`<output>/slurm_grid.json` records every submitted array: its job ID and which task is which
(trainer, fold). `grid_status` reads the grid from the fold folders (done), `squeue` (queued,
running) and submitit's result and log files (failed, with the error's last line); nothing needs
SLURM's accounting database. Submitting again skips what is done, queued or running, and submits
the rest (failed, cancelled, never submitted) as a new array.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

from nnunet_lightseg import output_folder
from nnunet_lightseg.baselines import Entry
from nnunet_lightseg.errors import LightSegError, UsageError
from nnunet_lightseg.folds import Job, fold_state, train_command
from nnunet_lightseg.nnunet_env import run_logged

GRID_FILE = "slurm_grid.json"
SUBMITIT_FOLDER = "slurm"  # submitit's pickles and task logs: <output>/slurm/<job id>_<task>_...
TASK_LOGS = "logs"  # each task's nnUNetv2_train output: <output>/logs/<dataset>__<entry>__fold_<k>.log
ACTIVE = ("queued", "running")


class GridTask(NamedTuple):
    """One task of the grid: a (trainer, fold) job on one dataset, trained into `results`."""

    job: Job
    dataset: str
    results: str  # <nnUNet_results>/<dataset>


class SlurmError(LightSegError):
    """SLURM or submitit cannot take the grid (not installed, sbatch refused it)."""


@dataclass(frozen=True)
class SlurmOptions:
    """What each array task asks SLURM for."""

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = 24 * 60
    max_parallel: int = 16  # tasks of one array running at once (%N)
    sbatch: tuple[str, ...] = ()  # further sbatch options as KEY=VALUE, e.g. qos=high account=lab

    def __post_init__(self):
        if self.gpus_per_task < 0 or self.time_min < 1 or self.max_parallel < 1 or \
                (self.cpus_per_task is not None and self.cpus_per_task < 1) or (self.mem_gb is not None and self.mem_gb <= 0):
            raise UsageError("--gpus-per-task must be 0 or more; --cpus-per-task, --mem-gb, --time-min and "
                             "--max-parallel must be positive.")
        bad = [item for item in self.sbatch if "=" not in item or item.startswith("-")]
        if bad:
            raise UsageError(f"--sbatch {' '.join(bad)}: give sbatch options as KEY=VALUE without dashes, "
                             f"e.g. --sbatch qos=high account=mylab")

    def submitit_parameters(self) -> dict:
        """Keyword arguments of submitit's SlurmExecutor.update_parameters."""
        extra = dict(item.split("=", 1) for item in self.sbatch)
        parameters = {"time": self.time_min, "array_parallelism": self.max_parallel,
                      "additional_parameters": {"requeue": True, **extra}}
        if self.partition:
            parameters["partition"] = self.partition
        if self.gpus_per_task:
            parameters["gpus_per_task"] = self.gpus_per_task
        if self.cpus_per_task:
            parameters["cpus_per_task"] = self.cpus_per_task
        if self.mem_gb:
            parameters["mem"] = f"{int(self.mem_gb * 1024)}M"
        return parameters


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UsageError("--executor slurm needs submitit: pip install 'nnunet-lightseg[slurm]'.") from None
    return submitit


def _task_class():
    """TrainTask, defined once submitit is importable (it subclasses submitit's Checkpointable)."""
    submitit = _submitit()

    class TrainTask(submitit.helpers.Checkpointable):
        """One (trainer, fold): the stock nnUNetv2_train, started, resumed (--c) or validated (--val)
        as the fold's files say when the task starts. Requeued as it is on timeout or pre-emption."""

        def __init__(self, job, dataset: str, configuration: str, device: str, results: str, env: dict,
                     log_path: str):
            self.job, self.dataset, self.configuration, self.device = job, dataset, configuration, device
            self.results, self.env, self.log_path = results, env, log_path

        def __call__(self) -> str:
            status = fold_state(self.job.folder(self.results, self.configuration))
            if status == "finished":
                return "finished earlier"
            env = dict(self.env)
            if os.environ.get("SLURM_CPUS_PER_TASK") and "OMP_NUM_THREADS" not in env:
                env["OMP_NUM_THREADS"] = os.environ["SLURM_CPUS_PER_TASK"]  # torch's threads: the task's CPUs
            run_logged(train_command(self.dataset, self.configuration, self.job, self.device, status), env,
                       self.log_path)
            return {"new": "trained", "resume": "resumed and trained", "validate": "validated"}[status]

    return TrainTask


def read_grid(output: str) -> dict:
    """The grid file's content ({"arrays": []} before the first submission)."""
    path = os.path.join(output, GRID_FILE)
    if not os.path.isfile(path):
        return {"arrays": []}
    with open(path) as f:
        return json.load(f)


def _squeue(job_ids: list[str]) -> dict[str, str]:
    """'<job>_<task>' (or '<job>' for a single task) -> 'queued' or 'running', for what SLURM still holds."""
    if not job_ids:
        return {}
    done = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %T"], capture_output=True,
                          text=True)
    states = {}
    for line in done.stdout.splitlines():
        task, state = line.split()
        states[task] = "running" if state in ("RUNNING", "COMPLETING", "CONFIGURING") else "queued"
    return states


def _failure(folder: str, task: str) -> str:
    """Why a task that is neither done nor in the queue stopped: the last line of the exception in
    submitit's result pickle, else of its stderr."""
    paths = _submitit().core.utils.JobPaths(folder, job_id=task, task_id=0)
    if paths.result_pickle.is_file():
        with open(paths.result_pickle, "rb") as f:
            outcome, value = pickle.load(f)
        if outcome == "error":
            lines = [line for line in str(value).strip().splitlines() if line.strip()]
            return lines[-1] if lines else "failed"
        return f"the task ended ({value}) but the fold has no checkpoint_final.pth and validation"
    if paths.stderr.is_file():
        with open(paths.stderr, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else "stopped without a message"
    return "stopped without a result (cancelled or lost)"


def grid_status(output: str) -> list[dict]:
    """One row per (dataset, trainer, fold) of the grid's newest submission of it: dataset, entry, fold,
    job (the array task), state (done, queued, running, failed) and, for a failure, its last line."""
    grid = read_grid(output)
    latest = {}
    for array in grid["arrays"]:
        for task in array["tasks"]:
            latest[(task["dataset"], task["trainer"], task["plans"], task["fold"])] = task
    queue = _squeue(sorted({task["job"].split("_")[0] for task in latest.values()}))
    rows = []
    for (dataset, trainer, plans, fold), record in latest.items():
        entry, task = Entry(trainer, plans), record["job"]
        row = {"dataset": dataset, "entry": entry.name, "fold": fold, "job": task}
        if fold_state(Job(entry, fold).folder(record["results"], grid["configuration"])) == "finished":
            row["state"] = "done"
        elif task in queue:
            row["state"] = queue[task]
        else:
            row["state"], row["error"] = "failed", _failure(os.path.join(output, SUBMITIT_FOLDER), task)
        rows.append(row)
    return rows


def submit(tasks: list[GridTask], configuration: str, device: str, env: dict, output: str, options: SlurmOptions,
           say: Callable[[str], None] = print) -> str | None:
    """Submit the tasks as one array; returns its job ID, or None when there is nothing to submit.
    Raises SlurmError when sbatch refuses it."""
    if not tasks:
        return None
    submitit = _submitit()
    TrainTask = _task_class()
    os.makedirs(os.path.join(output, TASK_LOGS), exist_ok=True)
    executor = submitit.SlurmExecutor(folder=os.path.join(output, SUBMITIT_FOLDER))
    executor.update_parameters(job_name="nnunet-lightseg", **options.submitit_parameters())
    callables = [TrainTask(task.job, task.dataset, configuration, device, task.results, env,
                           os.path.join(output, TASK_LOGS, _log_name(task))) for task in tasks]
    try:
        submitted = _submit_array(executor, callables)
    except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError, OSError) as error:
        said = str(error).strip().splitlines()
        raise SlurmError(f"sbatch refused the grid: {said[-1] if said else type(error).__name__} (check --partition "
                         f"and the other SLURM options)") from None
    job_id = submitted[0].job_id.split("_")[0]
    grid = read_grid(output)
    grid["configuration"] = configuration
    # submitit submits a single task as a plain job ("12"), several as an array ("12_0", "12_1", ...)
    grid["arrays"].append({"job_id": job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
                           "tasks": [{"dataset": task.dataset, "results": task.results, "trainer": task.job.entry.trainer,
                                      "plans": task.job.entry.plans, "fold": task.job.fold, "job": handle.job_id}
                                     for task, handle in zip(tasks, submitted)]})
    output_folder.write_atomically(os.path.join(output, GRID_FILE), json.dumps(grid, indent=2))
    say(f"submitted {len(tasks)} tasks as SLURM array job {job_id} (nnunet-lightseg status --output {output})")
    return job_id


def _log_name(task: GridTask) -> str:
    """The task's log file name: <entry>__fold_<k>.log, with the dataset in front when there are several."""
    return f"{task.dataset}__{task.job.entry.name}__fold_{task.job.fold}.log"


def wait(output: str, say: Callable[[str], None] = print, poll_s: float = 5) -> list[dict]:
    """Poll the grid until no task is queued or running; returns its final status."""
    shown = None
    while True:
        rows = grid_status(output)
        counts = {state: sum(row["state"] == state for row in rows) for state in ("done", *ACTIVE, "failed")}
        if counts != shown:
            say("grid: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
            shown = counts
        if not counts["queued"] and not counts["running"]:
            return rows
        time.sleep(poll_s)


def format_status(rows: list[dict]) -> str:
    """The grid as aligned text, one line per (trainer, fold)."""
    if not rows:
        return "nothing submitted yet"
    names = [f"{row['dataset']}  {row['entry']}" for row in rows]
    width = max(map(len, names))
    return "\n".join(f"{name:<{width}}  fold {row['fold']}  {row['job']:<10} {row['state']}"
                     + (f": {row['error']}" if row.get("error") else "") for name, row in zip(names, rows))


def _submit_array(executor, tasks: list) -> list:
    with executor.batch():
        return [executor.submit(task) for task in tasks]
