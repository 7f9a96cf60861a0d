"""`nnunet-lightseg benchmark`: train, validate, profile and report, through the stock nnU-Net commands.

Without a dataset it runs on the built-in demo data (written, planned and preprocessed into the
output folder): the default paper trainers plus nnU-Net's default, a short CPU schedule, fold 0.
With `-d D -c C` it runs on the user's dataset in their nnUNet_raw/_preprocessed/_results.

Every (trainer, fold) is one `nnUNetv2_train` subprocess (`--c` resumes an interrupted fold,
`--val` redoes a missing validation); a fold with checkpoint_final.pth and
validation/summary.json is finished and skipped, so running the same command again resumes.
A short schedule is part of the trainer name (`<trainer>_<E>epochs_<I>iters`, `schedules`), so a
fold trained on another schedule lives in another folder and is never taken for this one's.
nnU-Net's default runs as `nnUNetTrainerBaseline` on short schedules (trainers/nnunet_baselines.py).
A failing trainer is recorded (state file and report) and the others go on. SIGINT (Ctrl-C) and
SIGTERM stop the benchmark with `BenchmarkInterrupted`: the fold it was training is recorded as
interrupted and resumes from its last checkpoint when the same command runs again.
The output folder is claimed through `output_folder` (our marker; a folder of someone else's is
refused unless `force`, which moves its files aside), and the state file is written atomically
and validated when read.
"""
from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from nnunet_lightseg import output_folder, plan_profile, report, slurm
from nnunet_lightseg.baselines import PLANNERS, REFERENCE, SCHEDULABLE_REFERENCE, Entry, parse_entry
from nnunet_lightseg.demo_data import DEFAULT_DATASET_ID, DEFAULT_DATASET_NAME, DemoSettings, write_dataset
from nnunet_lightseg.errors import BenchmarkInterrupted, LightSegError, StateFileError, StepFailed, UsageError
from nnunet_lightseg.folds import Job, fold_state, train_command
from nnunet_lightseg.nnunet_env import (DEFAULT_TRAINERS, PREPROCESSED, RAW, RESULTS, SAVE_EVERY_VARIABLE,
                                        command_environment, dataset_name, require_folders, run_logged)
from nnunet_lightseg.schedules import Schedule, scheduled_name, seedless, split
from nnunet_lightseg.slurm import SlurmOptions

STATE_FILE = "benchmark_state.json"
EXECUTORS = ("local", "slurm")
DEMO_SCHEDULE = Schedule(epochs=5, iterations=20)  # without -d: a short CPU schedule

Runner = Callable[[list, dict, str], object]  # (command, env, log path); raises StepFailed
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals():
    """Inside the block SIGINT and SIGTERM raise BenchmarkInterrupted (once; later ones are ignored,
    so that recording the interruption is not cut short). The previous handlers come back after."""
    def stop(number, frame):
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        raise BenchmarkInterrupted(number)

    previous = {number: signal.signal(number, stop) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@dataclass(frozen=True)
class BenchmarkConfig:
    """One benchmark run. Without `datasets`, the built-in demo data in `output`."""

    output: str = "lightseg-benchmark"
    datasets: tuple[str, ...] = ()  # the user's datasets (ids or names), each planned, trained and reported
    configuration: str | None = None  # required with datasets
    trainers: tuple[str, ...] = ()  # TRAINER or TRAINER__PLANS; () = nnU-Net's default and DEFAULT_TRAINERS
    folds: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = ()  # () trains unseeded, as nnU-Net does; else one run per seed (`_seed<S>` names)
    epochs: int | None = None  # demo default 5; with a dataset, the trainers' own (nnU-Net's 1000)
    iterations: int | None = None  # per epoch; demo default 20; with a dataset, the trainers' own (250)
    device: str = "cpu"
    predictor: bool = False  # time nnUNetPredictor end to end in the profile
    profile: bool = True
    surface: bool = True  # HD95 and NSD in the report
    force: bool = False  # move the files of an output folder that is not ours aside instead of refusing
    executor: str = "local"  # or "slurm": submit the grid as SLURM array jobs (`slurm`)
    slurm: SlurmOptions = SlurmOptions()
    wait: bool = False  # slurm: wait for the grid, then profile and report
    save_every: int | None = None  # epochs between checkpoint_latest.pth writes (nnU-Net: 50)

    def __post_init__(self):
        if self.datasets and self.configuration is None:
            raise UsageError("-d needs -c CONFIGURATION, e.g. -c 3d_fullres")
        if len(set(self.datasets)) != len(self.datasets):
            raise UsageError(f"-d {' '.join(self.datasets)}: name each dataset once")
        if any(value is not None and value < 1 for value in (self.epochs, self.iterations)):
            raise UsageError("--epochs and --iterations must be at least 1")
        if not self.folds or any(fold < 0 for fold in self.folds):
            raise UsageError("--folds takes fold numbers, e.g. --folds 0 1 2 3 4")
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor {self.executor}: use one of {', '.join(EXECUTORS)}")
        if self.save_every is not None and self.save_every < 1:
            raise UsageError("--save-every must be at least 1 (epochs between checkpoints)")
        if any(seed < 0 for seed in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise UsageError("--seeds takes distinct whole numbers from 0, e.g. --seeds 0 1 2")

    @property
    def schedule(self) -> Schedule:
        if not self.datasets:
            return Schedule(self.epochs or DEMO_SCHEDULE.epochs, self.iterations or DEMO_SCHEDULE.iterations)
        return Schedule(self.epochs, self.iterations)

    def entries(self) -> list[Entry]:
        """Every (trainer, seed) as trained: the schedule and seed in the trainer name."""
        return [scheduled(parse_entry(trainer), self.schedule.with_seed(seed))
                for trainer in (self.trainers or (REFERENCE, *DEFAULT_TRAINERS)) for seed in (self.seeds or (None,))]


@dataclass
class BenchmarkResult:
    failures: dict[str, str] = field(default_factory=dict)  # entry name -> one-line error
    report_files: list[str] = field(default_factory=list)  # empty when the report failed
    pending: int = 0  # slurm: tasks still queued or running (no report yet)


def scheduled(entry: Entry, schedule: Schedule) -> Entry:
    """The entry that trains on `schedule` (the entry itself for the default schedule)."""
    if schedule.is_default:
        return entry
    base, own = split(entry.trainer)
    if not own.is_default:
        raise UsageError(f"{entry.trainer} already names a schedule: give {base} with --epochs/--iterations, "
                         f"or leave those out (with -d) to train it as named.")
    trainer = SCHEDULABLE_REFERENCE if base == REFERENCE else base
    return Entry(scheduled_name(trainer, schedule), entry.plans)


def ensure_plans(dataset: str, configuration: str, plans: str, env: dict, log_path: str, runner: Runner,
                 processes: int) -> None:
    """Plan and preprocess `plans` when its plans file or the configuration's data is missing."""
    preprocessed = os.path.join(env[PREPROCESSED], dataset)
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


def plan_all(dataset: str, configuration: str, entries: list[Entry], env: dict, log_path: str,
             runner: Runner) -> dict[str, str]:
    """Plan and preprocess what the entries train on, once per plans; {entry name: error} for those
    whose planning failed."""
    errors, failed_plans = {}, {}
    for entry in entries:
        if entry.plans not in failed_plans:
            try:
                ensure_plans(dataset, configuration, entry.plans, env, log_path, runner, processes=1)
            except StepFailed as error:
                failed_plans[entry.plans] = error
        if entry.plans in failed_plans:
            errors[entry.name] = str(failed_plans[entry.plans])
    return errors


def train_all(dataset: str, configuration: str, entries: list[Entry], folds: list[int], env: dict, output: str,
              device: str, runner: Runner = run_logged, say=print, state_file: str = STATE_FILE) -> dict[str, str]:
    """Train and validate every entry x fold, one after the other; returns {entry name: error} for those
    that failed."""
    log_path = os.path.join(output, "benchmark.log")
    results = os.path.join(env[RESULTS], dataset)
    state_path = os.path.join(output, state_file)
    state = load_state(state_path)
    progress = Progress(len(entries) * len(folds), say)
    errors = plan_all(dataset, configuration, entries, env, log_path, runner)
    for entry in entries:
        if entry.name in errors:
            state[entry.name] = {"error": errors[entry.name]}
            for _ in folds:
                progress.step(f"{entry.name}: planning failed, skipped")
            continue
        schedule = split(entry.trainer)[1]
        for fold in folds:
            job = Job(entry, fold)
            status = fold_state(job.folder(results, configuration))
            if status == "finished":
                progress.step(f"{entry.name} fold {fold}: finished earlier, skipped")
                continue
            started = time.time()
            record = {"epochs": schedule.epochs, "iterations": schedule.iterations, "seed": schedule.seed}
            try:
                runner(train_command(dataset, configuration, job, device, status), env, log_path)
            except BenchmarkInterrupted as stop:
                state[f"{entry.name}/fold_{fold}"] = {"interrupted": signal.Signals(stop.signal_number).name,
                                                      "seconds": time.time() - started, **record}
                save_state(state_path, state)
                raise BenchmarkInterrupted(stop.signal_number, f"{entry.name} fold {fold}") from None
            except StepFailed as error:
                errors[entry.name] = str(error)
                state[f"{entry.name}/fold_{fold}"] = {"error": str(error), "log_tail": error.details, **record}
                progress.step(f"{entry.name} fold {fold}: FAILED ({errors[entry.name]})", time.time() - started)
                continue
            state[f"{entry.name}/fold_{fold}"] = {"seconds": time.time() - started, **record}
            progress.step(f"{entry.name} fold {fold}: done in {time.time() - started:.0f} s", time.time() - started)
        save_state(state_path, state)
    save_state(state_path, state)
    return errors


def run_on_slurm(config: BenchmarkConfig, datasets: list[str], configuration: str, entries: list[Entry], env: dict,
                 output: str, say) -> tuple[dict[str, dict[str, str]], int]:
    """Plan every dataset here, then submit every (dataset, entry, fold) that is neither finished nor
    queued nor running as one SLURM array (`slurm.submit`); with config.wait, wait for the grid.
    Returns the failures per dataset ({dataset: {entry name: error}}) and how many tasks are still
    queued or running."""
    failures = {dataset: plan_all(dataset, configuration, entries, env, os.path.join(output, "benchmark.log"),
                                  run_logged) for dataset in datasets}
    active = {(row["dataset"], row["entry"], row["fold"]) for row in slurm.grid_status(output)
              if row["state"] in slurm.ACTIVE}
    tasks = []
    for dataset in datasets:
        results = os.path.join(env[RESULTS], dataset)
        tasks += [slurm.GridTask(Job(entry, fold), dataset, results) for entry in entries
                  if entry.name not in failures[dataset] for fold in config.folds
                  if (dataset, entry.name, fold) not in active
                  and fold_state(Job(entry, fold).folder(results, configuration)) != "finished"]
    if active:
        say(f"{len(active)} tasks of an earlier submission are still queued or running: not submitted again")
    slurm.submit(tasks, configuration, config.device, env, output, config.slurm, say)
    rows = slurm.wait(output, say) if config.wait else slurm.grid_status(output)
    for row in rows:
        if row["state"] == "failed" and row["dataset"] in failures:
            failures[row["dataset"]][row["entry"]] = f"fold {row['fold']} (SLURM task {row['job']}): {row['error']}"
    return failures, sum(row["state"] in slurm.ACTIVE for row in rows)


def load_state(path: str) -> dict[str, dict]:
    """The state file's records ({} when there is none); StateFileError when it is not valid JSON
    or not an object of objects."""
    if not os.path.isfile(path):
        return {}
    advice = "rename or remove it to start a new record (finished folds are still skipped)."
    try:
        with open(path) as f:
            state = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StateFileError(f"{path} is not valid JSON ({error}): {advice}") from None
    if not isinstance(state, dict) or not all(isinstance(record, dict) for record in state.values()):
        raise StateFileError(f"{path} is not a benchmark state (an object of records per trainer and fold): {advice}")
    return state


def save_state(path: str, state: dict[str, dict]) -> None:
    """Write the state file atomically (a crash leaves the previous one whole)."""
    output_folder.write_atomically(path, json.dumps(state, indent=2))


def run_benchmark(config: BenchmarkConfig, runner: Runner = run_logged, say=print) -> BenchmarkResult:
    """Train all, profile, report. A trainer that fails is recorded in the result and the others go on;
    raises LightSegError when the benchmark cannot start (bad options, nnU-Net not set up), and
    BenchmarkInterrupted on SIGINT or SIGTERM (call it from the main thread)."""
    with stop_on_signals():
        return _run(config, runner, say)


def _run(config: BenchmarkConfig, runner: Runner, say) -> BenchmarkResult:
    output = os.path.abspath(config.output)
    schedule = config.schedule
    entries = config.entries()
    if not config.datasets:
        datasets, configuration = [f"Dataset{DEFAULT_DATASET_ID:03d}_{DEFAULT_DATASET_NAME}"], "3d_fullres"
    else:
        require_folders()
        datasets, configuration = [dataset_name(d) for d in config.datasets], config.configuration
    env = command_environment(output, config.force, private=not config.datasets, say=say,
                              planning=not config.datasets)
    if not config.datasets:
        write_dataset(env[RAW], DemoSettings())
    if config.save_every:
        env[SAVE_EVERY_VARIABLE] = str(config.save_every)
    seeds = f" x seeds {list(config.seeds)}" if config.seeds else ""
    say(f"benchmark of {len(entries) // max(1, len(config.seeds))} trainers{seeds} x folds {list(config.folds)} on "
        f"{', '.join(datasets)} {configuration} ({schedule.describe()}, device {config.device}) into {output}")
    several = len(datasets) > 1
    if config.executor == "slurm":
        failures, pending = run_on_slurm(config, datasets, configuration, entries, env, output, say)
        if pending:
            say(f"{pending} tasks are queued or running: `nnunet-lightseg status --output {output}` shows them; run "
                f"this command again (or add --wait) for the profile and report once they are done.")
            return BenchmarkResult(_flat(failures, several), pending=pending)
    else:
        failures = {dataset: train_all(dataset, configuration, entries, list(config.folds), env, output,
                                       config.device, runner, say,
                                       state_file=f"benchmark_state_{dataset}.json" if several else STATE_FILE)
                    for dataset in datasets}
    result = BenchmarkResult(_flat(failures, several))
    reports = {}
    try:
        for dataset in datasets:
            reports[dataset] = report_dataset(config, dataset, configuration, entries, env, output, failures[dataset],
                                              several, result, say)
        if several and all(built is not None for built in reports.values()):
            result.report_files += write_cross_dataset(reports, os.path.join(output, "report"), say)
    finally:  # the failures are shown even when the report stops on a bug
        for name, error in result.failures.items():
            say(f"FAILED {name}: {error}")
    return result


def _flat(failures: dict[str, dict[str, str]], several: bool) -> dict[str, str]:
    """{entry: error} for one dataset, {"dataset: entry": error} for several."""
    return {(f"{dataset}: {name}" if several else name): error
            for dataset, errors in failures.items() for name, error in errors.items()}


def report_dataset(config: BenchmarkConfig, dataset: str, configuration: str, entries: list[Entry], env: dict,
                   output: str, failures: dict[str, str], several: bool, result: BenchmarkResult, say) -> dict | None:
    """Profile (unless config.profile is off) and report one dataset into <output>/report (one dataset)
    or <output>/report/<dataset> (several); returns the built report, None when it failed."""
    profile = None
    if config.profile:
        say(f"profiling every trainer at the plan's patch size of {dataset}")
        try:
            networks = tuple(dict.fromkeys(Entry(seedless(e.trainer)[0], e.plans) for e in entries))  # once per seed set
            profile = plan_profile.profile(plan_profile.ProfileConfig(dataset, configuration, networks,
                                                                      device=config.device,
                                                                      predictor=config.predictor),
                                           progress=say, env=env)
            plan_profile.write(profile, os.path.join(output, f"profile_{dataset}.json" if several else "profile.json"))
        except LightSegError as error:
            say(f"profile failed: {error}")
    try:
        built = report.build(os.path.join(env[RESULTS], dataset), configuration, profile=profile, errors=failures,
                             surface=config.surface)
        folder = os.path.join(output, "report", dataset) if several else os.path.join(output, "report")
        output_folder.claim(folder)
        result.report_files += report.write(built, folder, f"{dataset} {configuration}")
        say(built["summary"].to_string(index=False))
        say(f"report: {result.report_files[-1]}")
        return built
    except LightSegError as error:
        say(f"report of {dataset} failed: {error}")
        return None


def write_cross_dataset(reports: dict[str, dict], folder: str, say) -> list[str]:
    """The cross-dataset summary (`report.cross_dataset_table`) as cross_dataset.md and .csv in `folder`."""
    table = report.cross_dataset_table(reports)
    paths = [os.path.join(folder, "cross_dataset.csv"), os.path.join(folder, "cross_dataset.md")]
    table.to_csv(paths[0], index=False)
    with open(paths[1], "w") as f:
        f.write(f"# Across {len(reports)} datasets\n\n" + table.to_markdown(index=False, floatfmt=".4g") + "\n\n"
                "Rank: by mean foreground Dice on each dataset (1 = best; ties share the mean rank). Wins, ties, "
                "losses: against each dataset's reference, a win when its Holm-corrected paired Wilcoxon test is "
                "significant at 0.05 with a positive mean difference, a loss when negative.\n")
    say(table.to_string(index=False))
    say(f"cross-dataset summary: {paths[1]}")
    return paths
