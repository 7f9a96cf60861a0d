"""`nnunet-lightseg benchmark`: train, validate, profile and report, through the stock nnU-Net commands.

Without a dataset it runs on the built-in demo data (written, planned and preprocessed into the
output folder): the default paper trainers plus nnU-Net's default, a short CPU schedule, fold 0.
With `-d D -c C` it runs on the user's dataset in their nnUNet_raw/_preprocessed/_results.

Every (trainer, fold) is one `nnUNetv2_train` subprocess (`--c` resumes an interrupted fold,
`--val` redoes a missing validation); a fold with checkpoint_final.pth and
validation/summary.json is finished and skipped, so running the same command again resumes.
A failing trainer is recorded (state file and report) and the others go on. Short schedules
use the `_<N>epochs` trainers and NNUNET_LIGHTSEG_ITERATIONS; nnU-Net's default runs as
`nnUNetTrainerBaseline`, which honours the same iteration count (see trainers/nnunet_baselines.py).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass

from nnunet_lightseg.baselines import DEFAULT_PLANS, PLANNERS, Entry

STATE_FILE = "benchmark_state.json"
LOG_TAIL_LINES = 15


class StepFailed(RuntimeError):
    """A stock command failed. str() is one line (the exit status and the error it printed);
    `details` holds the tail of its log."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b")


def run_logged(command: list[str], env: dict, log_path: str) -> None:
    """Run a stock nnU-Net command, its output appended to log_path; raise StepFailed on failure."""
    from nnunet_lightseg.demo import nnunet_command

    command = [nnunet_command(command[0]), *command[1:]]
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        start = log.tell()
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        with open(log_path) as log:
            log.seek(start)
            lines = [line.rstrip() for line in log if line.strip()]
        errors = [line for line in lines if _ERROR_LINE.match(line)]
        cause = errors[0] if errors else (lines[-1] if lines else "no output")
        raise StepFailed(f"{os.path.basename(command[0])} exited {code}: {cause[:300]} (log {log_path})",
                         "\n".join(lines[-LOG_TAIL_LINES:]))


def scheduled(entry: Entry, epochs: int | None) -> Entry:
    """The entry that trains on the requested schedule (the entry itself when epochs is None)."""
    if epochs is None:
        return entry
    trainer = "nnUNetTrainerBaseline" if entry.trainer == "nnUNetTrainer" else entry.trainer
    return Entry(f"{trainer}_{epochs}epoch{'' if epochs == 1 else 's'}", entry.plans)


@dataclass(frozen=True)
class Job:
    entry: Entry  # as trained, schedule included
    fold: int

    def folder(self, results: str, configuration: str) -> str:
        return os.path.join(results, f"{self.entry.trainer}__{self.entry.plans}__{configuration}", f"fold_{self.fold}")


def fold_state(folder: str) -> str:
    """'finished', 'validate' (trained, validation missing), 'resume' (a checkpoint to go on from) or 'new'."""
    trained = os.path.isfile(os.path.join(folder, "checkpoint_final.pth"))
    if trained:
        return "finished" if os.path.isfile(os.path.join(folder, "validation", "summary.json")) else "validate"
    return "resume" if os.path.isfile(os.path.join(folder, "checkpoint_latest.pth")) else "new"


def ensure_plans(dataset: str, configuration: str, plans: str, env: dict, log_path: str, runner, processes: int):
    """Plan and preprocess `plans` when its plans file or the configuration's data is missing."""
    preprocessed = os.path.join(env["nnUNet_preprocessed"], dataset)
    dataset_id = dataset[len("Dataset"):len("Dataset") + 3]  # the planning commands take the number only
    plans_file = os.path.join(preprocessed, f"{plans}.json")
    if not os.path.isfile(plans_file):
        if plans not in PLANNERS:
            raise StepFailed(f"{plans_file} does not exist and nnU-Net has no planner of that name; plan it yourself "
                             f"(nnUNetv2_plan_experiment ... -overwrite_plans_name {plans}) and run again.")
        runner(["nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", configuration, "-pl", PLANNERS[plans],
                "-np", str(processes)], env, log_path)
        return
    with open(plans_file) as f:
        identifier = json.load(f)["configurations"][configuration].get("data_identifier", f"{plans}_{configuration}")
    if not os.path.isdir(os.path.join(preprocessed, identifier)):
        runner(["nnUNetv2_preprocess", "-d", dataset_id, "-plans_name", plans, "-c", configuration, "-np",
                str(processes)], env, log_path)


class Progress:
    """'[done/total]' and an ETA from the mean duration of the jobs that really ran."""

    def __init__(self, total: int, say=print):
        self.total, self.done, self.durations, self.say = total, 0, [], say

    def step(self, message: str, seconds: float | None = None) -> None:
        self.done += 1
        if seconds is not None:
            self.durations.append(seconds)
        eta = ""
        if self.durations and self.done < self.total:
            remaining = sum(self.durations) / len(self.durations) * (self.total - self.done)
            eta = f", ETA {remaining / 60:.1f} min"
        self.say(f"[{self.done}/{self.total}{eta}] {message}")


def train_all(dataset: str, configuration: str, entries: list[Entry], folds: list[int], env: dict, output: str,
              device: str, runner=run_logged, say=print) -> dict[str, str]:
    """Train and validate every entry x fold; returns {entry name: error} for those that failed."""
    log_path = os.path.join(output, "benchmark.log")
    results = os.path.join(env["nnUNet_results"], dataset)
    state_path = os.path.join(output, STATE_FILE)
    state = {}
    if os.path.isfile(state_path):
        with open(state_path) as f:
            state = json.load(f)
    progress = Progress(len(entries) * len(folds), say)
    errors = {}
    for entry in entries:
        try:
            ensure_plans(dataset, configuration, entry.plans, env, log_path, runner, processes=1)
        except StepFailed as error:
            errors[entry.name] = str(error)
            state[entry.name] = {"error": str(error), "log_tail": error.details}
            for _ in folds:
                progress.step(f"{entry.name}: planning failed, skipped")
            continue
        for fold in folds:
            job = Job(entry, fold)
            status = fold_state(job.folder(results, configuration))
            if status == "finished":
                progress.step(f"{entry.name} fold {fold}: finished earlier, skipped")
                continue
            command = ["nnUNetv2_train", dataset, configuration, str(fold), "-tr", entry.trainer, "-p", entry.plans,
                       "-device", device] + {"new": [], "resume": ["--c"], "validate": ["--val"]}[status]
            started = time.time()
            try:
                runner(command, env, log_path)
            except StepFailed as error:
                errors[entry.name] = str(error)
                state[f"{entry.name}/fold_{fold}"] = {"error": str(error), "log_tail": error.details}
                progress.step(f"{entry.name} fold {fold}: FAILED ({errors[entry.name]})", time.time() - started)
                continue
            state[f"{entry.name}/fold_{fold}"] = {"seconds": time.time() - started}
            progress.step(f"{entry.name} fold {fold}: done in {time.time() - started:.0f} s", time.time() - started)
        with open(state_path, "w") as f:
            json.dump(state, f, indent=2)
    with open(state_path, "w") as f:
        json.dump(state, f, indent=2)
    return errors


def demo_environment(output: str) -> dict:
    env = dict(os.environ)
    for variable, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                          ("nnUNet_results", "results")):
        env[variable] = os.path.join(output, sub)
        os.makedirs(env[variable], exist_ok=True)
    return env


def run_benchmark(args, runner=run_logged, say=print) -> int:
    """The `benchmark` command: train all, profile, report; returns 1 if any trainer failed."""
    from nnunet_lightseg import plan_profile, report
    from nnunet_lightseg.baselines import parse_entry
    from nnunet_lightseg.cli import DEFAULT_TRAINERS

    output = os.path.abspath(args.output)
    os.makedirs(output, exist_ok=True)
    demo = args.dataset is None
    if demo:
        from nnunet_lightseg.demo_data import DEFAULT_DATASET_ID, DemoSettings, write_dataset

        env = demo_environment(output)
        write_dataset(env["nnUNet_raw"], DemoSettings())
        dataset, configuration = f"Dataset{DEFAULT_DATASET_ID:03d}_LightSegDemo", "3d_fullres"
        epochs = args.epochs or 5
        iterations = args.iterations or 20
    else:
        if args.configuration is None:
            raise SystemExit("nnunet-lightseg benchmark: -d needs -c CONFIGURATION, e.g. -c 3d_fullres")
        missing = [v for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results") if not os.environ.get(v)]
        if missing:
            raise SystemExit(f"nnunet-lightseg benchmark: set {', '.join(missing)} as for nnUNetv2_train.")
        env = dict(os.environ)
        dataset, configuration = plan_profile.dataset_name(args.dataset), args.configuration
        epochs, iterations = args.epochs, args.iterations
    if iterations is not None:
        env["NNUNET_LIGHTSEG_ITERATIONS"] = str(iterations)
        env["NNUNET_LIGHTSEG_VAL_ITERATIONS"] = str(max(1, iterations // 4))
    env.setdefault("nnUNet_n_proc_DA", "1" if args.device == "cpu" else env.get("nnUNet_n_proc_DA", "4"))
    try:
        asked = [parse_entry(t) for t in (args.trainers or ["nnUNetTrainer", *DEFAULT_TRAINERS])]
    except ValueError as error:
        raise SystemExit(f"nnunet-lightseg benchmark: {error}")
    entries = [scheduled(e, epochs) for e in asked]
    say(f"benchmark of {len(entries)} trainers x folds {args.folds} on {dataset} {configuration} "
        f"({'full schedule' if epochs is None else f'{epochs} epochs'}"
        f"{'' if iterations is None else f' x {iterations} iterations'}, device {args.device}) into {output}")
    errors = train_all(dataset, configuration, entries, args.folds, env, output, args.device, runner, say)

    profile = None
    if not args.no_profile:
        say("profiling every trainer at the plan's patch size")
        try:
            profile = plan_profile.profile(dataset, configuration, entries, device=args.device, env=env,
                                           predictor=args.predictor, progress=say)
            plan_profile.write(profile, os.path.join(output, "profile.json"))
        except plan_profile.ProfileError as error:
            say(f"profile failed: {error}")
    results = os.path.join(env["nnUNet_results"], dataset)
    try:
        built = report.build(results, configuration, profile=profile, errors=errors, surface=not args.no_surface)
        written = report.write(built, os.path.join(output, "report"), f"{dataset} {configuration}")
        say(built["summary"].to_string(index=False))
        say(f"report: {written[-1]}")
    except report.ReportError as error:
        say(f"report failed: {error}")
    for name, error in errors.items():
        say(f"FAILED {name}: {error}")
    return 1 if errors else 0
