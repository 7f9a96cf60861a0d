"""nnU-Net's environment as the tools use it (standard library only; nnunetv2 is imported lazily).

The folder variables, the default trainers, where a dataset's results are, a private set of
nnU-Net folders for a run, nnU-Net's worker counts for this machine, and running a stock console
command (`nnUNetv2_train`, ...) with its output kept in a log. Errors are `nnunet_lightseg.errors`
exceptions with one-line messages.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from typing import Callable, Mapping

from nnunet_lightseg.errors import NnUNetEnvironmentError, StepFailed
from nnunet_lightseg.output_folder import claim
from nnunet_lightseg.schedules import DEPRECATED_VARIABLES

RAW, PREPROCESSED, RESULTS = "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"
FOLDER_VARIABLES = {RAW: "raw", PREPROCESSED: "preprocessed", RESULTS: "results"}  # variable -> private subfolder
AUGMENTATION_WORKERS = "nnUNet_n_proc_DA"  # nnU-Net's data-augmentation worker processes
DEFAULT_WORKERS = "nnUNet_def_n_proc"  # nnU-Net's other worker processes (preprocessing, validation export)
WORKER_VARIABLES = (DEFAULT_WORKERS, AUGMENTATION_WORKERS)
SAVE_EVERY_VARIABLE = "NNUNET_LIGHTSEG_SAVE_EVERY"  # epochs between checkpoint_latest.pth writes (trainers/base.py)
MAX_CHOSEN_WORKERS = 4

# Each paper model's default variant, and its trainer: what benchmark, profile and the measure
# scripts run unless told otherwise (nnU-Net's default is added as the reference where one is needed).
DEFAULT_MODELS = ("UltraLightUNet", "LightMedSeg", "DALight3D", "VeloxSeg")
DEFAULT_TRAINERS = tuple(f"nnUNetTrainer{model}" for model in DEFAULT_MODELS)

_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b")


def switched_off(variable: str) -> bool:
    """Whether one of the package's on-by-default switches (NNUNET_LIGHTSEG_...) is set to 0/false/no/off."""
    return os.environ.get(variable, "1").strip().lower() in ("0", "false", "no", "off")


def require_folders(environ: Mapping[str, str] | None = None) -> None:
    """Raise NnUNetEnvironmentError naming the folder variables that are not set."""
    environ = os.environ if environ is None else environ
    missing = [variable for variable in FOLDER_VARIABLES if not environ.get(variable)]
    if missing:
        raise NnUNetEnvironmentError(f"set {', '.join(missing)} as for nnUNetv2_train "
                                     f"(nnU-Net's documentation/setting_up_paths.md).")


def private_environment(work: str, base: Mapping[str, str] | None = None) -> dict:
    """A copy of `base` (default os.environ) whose nnU-Net folders are work/raw, work/preprocessed and
    work/results (created), so that a run touches none of the user's own folders; with the worker
    counts of `choose_workers`."""
    env = dict(os.environ if base is None else base)
    choose_workers(env)
    for variable, sub in FOLDER_VARIABLES.items():
        env[variable] = os.path.join(os.path.abspath(work), sub)
        os.makedirs(env[variable], exist_ok=True)
    return env


def command_environment(work: str, force: bool, private: bool, say: Callable[[str], None],
                        planning: bool = True) -> dict:
    """The environment of a command that writes into its own folder `work` (demo, benchmark,
    selfcheck): nnU-Net's worker counts chosen (`choose_workers`: a bad value is refused before
    anything is written), `work` claimed (`output_folder.claim`: with `force`, what it held is moved
    aside, and said), nnU-Net's folders inside `work` when `private`, and without the deprecated
    iteration variables (the trainer names carry the schedule)."""
    env = dict(os.environ)
    workers = choose_workers(env, planning)
    moved = claim(work, force)
    if moved:
        say(f"--force: moved what {work} held into {moved}")
    if private:
        env = private_environment(work, base=env)
    for variable in DEPRECATED_VARIABLES:
        env.pop(variable, None)
    say(workers)
    return env


def _cpus() -> int:
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_workers() -> int:
    """The worker processes we give nnU-Net here: half the CPUs, 1 to MAX_CHOSEN_WORKERS."""
    return max(1, min(MAX_CHOSEN_WORKERS, _cpus() // 2))


def choose_workers(env: dict, planning: bool = True) -> str:
    """Set nnU-Net's worker counts (WORKER_VARIABLES) in `env` to `machine_workers()` where not set;
    return one line saying what they are. Raises NnUNetEnvironmentError for a value nnU-Net cannot
    take: not a whole number, or 0, except 0 augmentation workers when not `planning` (training
    takes 0: it augments in its own process; the planner cannot)."""
    chosen = str(machine_workers())
    for variable in WORKER_VARIABLES:
        value = env.setdefault(variable, chosen)
        least = 0 if variable == AUGMENTATION_WORKERS and not planning else 1
        if not (value.strip().isdigit() and int(value) >= least):
            why = " (nnU-Net's planner runs with it)" if variable == AUGMENTATION_WORKERS and least else ""
            raise NnUNetEnvironmentError(f"{variable}={value!r}: nnU-Net needs a whole number of at least {least} "
                                         f"here{why}; export e.g. {variable}=1, or unset it to let nnunet-lightseg "
                                         f"choose.")
    values = ", ".join(f"{variable}={env[variable]}" for variable in WORKER_VARIABLES)
    return f"nnU-Net worker processes: {values} (default {chosen} for {_cpus()} CPUs; export them to choose)"


def dataset_name(dataset: str) -> str:
    """'4', '004' or 'Dataset004_Hippocampus' -> 'Dataset004_Hippocampus', as nnU-Net resolves it
    (in the nnU-Net folders of os.environ)."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        return maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as error:
        said = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else type(error).__name__
        raise NnUNetEnvironmentError(f"dataset {dataset!r} not found ({said}): check the dataset id or name, and "
                                     f"{RAW}/{PREPROCESSED}.") from None


def results_folder(dataset: str) -> str:
    """<nnUNet_results>/<dataset name>: where nnUNetv2_train writes the dataset's runs."""
    results = os.environ.get(RESULTS)
    if not results:
        raise NnUNetEnvironmentError(f"{RESULTS} is not set: export it as for nnUNetv2_train.")
    return os.path.join(results, dataset_name(dataset))


def console_command(name: str) -> str:
    """The path of a stock console script (e.g. nnUNetv2_train) of this Python environment."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = beside if os.path.exists(beside) else shutil.which(name)
    if found is None:
        raise NnUNetEnvironmentError(f"{name} not found: install nnU-Net into this environment "
                                     f"(pip install nnunet-lightseg).")
    return found


def run_logged(command: list[str], env: Mapping[str, str], log_path: str,
               echo: Callable[[str], None] | None = None, timeout: float | None = None) -> str:
    """Run a stock console command (its name first) and return what it printed.

    Its output (stdout and stderr) is appended to `log_path` after a `$ command` line, and each
    line is passed to `echo` as it comes, if given. Raises StepFailed, with a one-line message (exit
    status, the first error line it printed, the log) when it fails or runs past `timeout` seconds.
    """
    command = [console_command(command[0]), *command[1:]]
    lines = []
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1)
        timer = threading.Timer(timeout, process.kill) if timeout else None
        if timer:
            timer.start()
        try:
            for line in process.stdout:
                log.write(line)
                lines.append(line)
                if echo is not None:
                    echo(line.rstrip("\n"))
            code = process.wait()
        except BaseException:  # a signal or Ctrl-C in our process: stop the child too, then pass it on
            process.terminate()
            process.wait()
            raise
        finally:
            if timer:
                timer.cancel()
    output = "".join(lines)
    if code != 0:
        printed = [line.rstrip() for line in lines if line.strip()]
        errors = [line for line in printed if _ERROR_LINE.match(line)]
        cause = errors[0] if errors else (printed[-1] if printed else "no output")
        if timer and code < 0:
            cause = f"stopped after {timeout:g} s"
        raise StepFailed(f"{os.path.basename(command[0])} exited {code}: {cause[:300]} (log {log_path})", output)
    return output
