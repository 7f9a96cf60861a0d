"""The benchmark's orchestration with a fake command runner: no training happens."""
import json
import os
import signal
import time

import pytest

from nnunet_lightseg import benchmark, output_folder
from nnunet_lightseg.baselines import Entry
from nnunet_lightseg.cli import main
from nnunet_lightseg.errors import StateFileError, StepFailed, UsageError
from nnunet_lightseg.folds import fold_state
from nnunet_lightseg.nnunet_env import run_logged
from nnunet_lightseg.schedules import Schedule

DATASET = "Dataset999_Tiny"
CONFIGURATION = "3d_fullres"


class FakeRunner:
    """Plays nnUNetv2_train: writes the files a finished fold has; `fail` trainers exit 1,
    `interrupt` trainers stop after their first checkpoint (once), `signal` trainers send the
    benchmark that signal after their first checkpoint (once)."""

    def __init__(self, env, fail=(), interrupt=(), signal=None):
        self.env, self.fail, self.interrupt, self.commands = env, set(fail), set(interrupt), []
        self.signal = dict(signal or {})

    def __call__(self, command, env, log_path):
        self.commands.append(command)
        assert command[0] == "nnUNetv2_train" and "NNUNET_LIGHTSEG_ITERATIONS" not in env  # the name says it
        _, dataset, configuration, fold, _, trainer, _, plans, *_ = command
        if trainer in self.fail:
            raise StepFailed(f"nnUNetv2_train exited 1 (log {log_path}):\nRuntimeError: boom")
        folder = os.path.join(env["nnUNet_results"], dataset, f"{trainer}__{plans}__{configuration}", f"fold_{fold}")
        os.makedirs(os.path.join(folder, "validation"), exist_ok=True)
        if trainer in self.interrupt:
            self.interrupt.remove(trainer)
            open(os.path.join(folder, "checkpoint_latest.pth"), "w").close()
            raise StepFailed("nnUNetv2_train exited -9 (killed)")
        if trainer in self.signal:
            open(os.path.join(folder, "checkpoint_latest.pth"), "w").close()
            os.kill(os.getpid(), self.signal.pop(trainer))
            time.sleep(5)  # the handler raises before this ends
        open(os.path.join(folder, "checkpoint_final.pth"), "w").close()
        case = os.path.join(folder, "validation", f"case_{fold}.nii.gz")
        with open(os.path.join(folder, "validation", "summary.json"), "w") as f:
            json.dump({"metric_per_case": [{"metrics": {"1": {"Dice": 0.5 + int(fold) / 10}},
                                            "prediction_file": case, "reference_file": case}],
                       "foreground_mean": {"Dice": 0.5}}, f)


@pytest.fixture
def user_dataset(tmp_path, monkeypatch):
    """nnU-Net folders with a planned and preprocessed dataset (the plan itself is not read)."""
    env = {}
    for variable, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                          ("nnUNet_results", "results")):
        env[variable] = str(tmp_path / sub)
        monkeypatch.setenv(variable, env[variable])
    preprocessed = tmp_path / "preprocessed" / DATASET
    (preprocessed / "tiny_data").mkdir(parents=True)
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps(
        {"configurations": {CONFIGURATION: {"data_identifier": "tiny_data"}}}))
    return env


def arguments(tmp_path, **overrides):
    values = dict(datasets=(DATASET,), configuration=CONFIGURATION, trainers=("nnUNetTrainer", "nnUNetTrainerVeloxSeg"),
                  folds=(0, 1), epochs=2, iterations=3, device="cpu", predictor=False, profile=False,
                  surface=False, output=str(tmp_path / "bench"))
    values.update(overrides)
    return benchmark.BenchmarkConfig(**values)


def test_interrupted_run_resumes_and_finished_folds_are_skipped(tmp_path, user_dataset):
    runner = FakeRunner(user_dataset, interrupt={"nnUNetTrainerVeloxSeg_2epochs_3iters"})
    lines = []
    assert benchmark.run_benchmark(arguments(tmp_path), runner=runner, say=lines.append).failures
    trained = [(c[5], c[3], c[10:]) for c in runner.commands]
    # nnU-Net's default runs as nnUNetTrainerBaseline so that it gets the same short schedule
    assert trained == [("nnUNetTrainerBaseline_2epochs_3iters", "0", []),
                       ("nnUNetTrainerBaseline_2epochs_3iters", "1", []),
                       ("nnUNetTrainerVeloxSeg_2epochs_3iters", "0", []),
                       ("nnUNetTrainerVeloxSeg_2epochs_3iters", "1", [])]
    assert any("[4/4" in line for line in lines) and any("ETA" in line for line in lines)

    runner.commands.clear()
    assert not benchmark.run_benchmark(arguments(tmp_path), runner=runner, say=lines.append).failures
    assert [(c[5], c[3], c[10:]) for c in runner.commands] == [("nnUNetTrainerVeloxSeg_2epochs_3iters", "0", ["--c"])]
    assert any("finished earlier, skipped" in line for line in lines)
    report = open(tmp_path / "bench" / "report" / "report.md").read()
    assert "nnUNetTrainerVeloxSeg_2epochs_3iters" in report and "nnUNetTrainerBaseline_2epochs_3iters" in report
    state = json.load(open(tmp_path / "bench" / benchmark.STATE_FILE))
    assert state["nnUNetTrainerVeloxSeg_2epochs_3iters/fold_0"]["iterations"] == 3


def test_a_rerun_with_other_iterations_does_not_take_the_old_folds_for_finished(tmp_path, user_dataset):
    runner = FakeRunner(user_dataset)
    assert not benchmark.run_benchmark(arguments(tmp_path, iterations=3), runner=runner, say=lambda line: None).failures
    runner.commands.clear()
    lines = []
    assert not benchmark.run_benchmark(arguments(tmp_path, iterations=4), runner=runner, say=lines.append).failures
    assert [(c[5], c[3], c[10:]) for c in runner.commands] == [
        ("nnUNetTrainerBaseline_2epochs_4iters", "0", []), ("nnUNetTrainerBaseline_2epochs_4iters", "1", []),
        ("nnUNetTrainerVeloxSeg_2epochs_4iters", "0", []), ("nnUNetTrainerVeloxSeg_2epochs_4iters", "1", [])]
    assert not any("finished earlier" in line for line in lines)
    state = json.load(open(tmp_path / "bench" / benchmark.STATE_FILE))
    assert state["nnUNetTrainerVeloxSeg_2epochs_4iters/fold_1"]["iterations"] == 4
    assert state["nnUNetTrainerVeloxSeg_2epochs_3iters/fold_1"]["iterations"] == 3  # the old run stays apart


def test_a_failing_trainer_does_not_stop_the_others_and_shows_in_the_report(tmp_path, user_dataset):
    runner = FakeRunner(user_dataset, fail={"nnUNetTrainerVeloxSeg_2epochs_3iters"})
    lines = []
    args = arguments(tmp_path, trainers=("nnUNetTrainerVeloxSeg", "nnUNetTrainer", "nnUNetTrainerLightMedSeg"))
    failures = benchmark.run_benchmark(args, runner=runner, say=lines.append).failures
    assert list(failures) == ["nnUNetTrainerVeloxSeg_2epochs_3iters"]
    assert [c[5] for c in runner.commands].count("nnUNetTrainerLightMedSeg_2epochs_3iters") == 2
    summary = open(tmp_path / "bench" / "report" / "report.csv").read()
    failed = next(line for line in summary.splitlines() if line.startswith("nnUNetTrainerVeloxSeg_2epochs_3iters"))
    assert "exited 1" in failed
    state = json.load(open(tmp_path / "bench" / benchmark.STATE_FILE))
    assert "RuntimeError: boom" in state["nnUNetTrainerVeloxSeg_2epochs_3iters/fold_0"]["error"]
    assert any(line.startswith("FAILED nnUNetTrainerVeloxSeg_2epochs_3iters") for line in lines)


def test_missing_resenc_plans_are_planned_with_nnunets_planner(tmp_path, user_dataset):
    calls = []
    benchmark.ensure_plans(DATASET, CONFIGURATION, "nnUNetResEncUNetMPlans", user_dataset, str(tmp_path / "log"),
                           lambda command, env, log: calls.append(command), processes=1)
    assert calls == [["nnUNetv2_plan_and_preprocess", "-d", "999", "-c", CONFIGURATION, "-pl", "nnUNetPlannerResEncM",
                      "-np", "1"]]
    with pytest.raises(StepFailed, match="no planner of that name"):
        benchmark.ensure_plans(DATASET, CONFIGURATION, "MyPlans", user_dataset, str(tmp_path / "log"), None, 1)


def test_schedules_and_fold_states(tmp_path):
    assert benchmark.scheduled(Entry("nnUNetTrainer", "nnUNetResEncUNetMPlans"), Schedule(1, 20)) == \
        Entry("nnUNetTrainerBaseline_1epoch_20iters", "nnUNetResEncUNetMPlans")
    assert benchmark.scheduled(Entry("nnUNetTrainer"), Schedule(iterations=50)) == Entry("nnUNetTrainerBaseline_50iters")
    assert benchmark.scheduled(Entry("nnUNetTrainerVeloxSeg"), Schedule()) == Entry("nnUNetTrainerVeloxSeg")
    with pytest.raises(UsageError, match="already names a schedule"):
        benchmark.scheduled(Entry("nnUNetTrainerVeloxSeg_5epochs"), Schedule(2, 3))
    seeded = benchmark.BenchmarkConfig(output=str(tmp_path), trainers=("nnUNetTrainer", "nnUNetTrainerVeloxSeg"),
                                       seeds=(0, 2), epochs=1, iterations=2).entries()
    assert [e.trainer for e in seeded] == ["nnUNetTrainerBaseline_1epoch_2iters_seed0",
                                           "nnUNetTrainerBaseline_1epoch_2iters_seed2",
                                           "nnUNetTrainerVeloxSeg_1epoch_2iters_seed0",
                                           "nnUNetTrainerVeloxSeg_1epoch_2iters_seed2"]
    with pytest.raises(UsageError, match="--seeds"):
        benchmark.BenchmarkConfig(seeds=(1, 1))
    assert fold_state(str(tmp_path)) == "new"
    (tmp_path / "checkpoint_final.pth").touch()
    assert fold_state(str(tmp_path)) == "validate"


def test_a_failed_command_is_summarised_by_its_error_line(tmp_path):
    log = str(tmp_path / "benchmark.log")
    assert run_logged(["python", "-c", "print('fine')"], dict(os.environ), log) == "fine\n"
    with pytest.raises(StepFailed) as failure:
        run_logged(["python", "-c", "print('working'); raise ValueError('bad input')"], dict(os.environ), log)
    assert "exited 1: ValueError: bad input" in str(failure.value) and "\n" not in str(failure.value)
    assert "Traceback" in failure.value.details and "fine" not in failure.value.details


def test_bad_options_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="-c CONFIGURATION"):
        arguments(tmp_path, configuration=None)
    with pytest.raises(UsageError, match="at least 1"):
        arguments(tmp_path, iterations=0)


def test_private_environments_and_missing_folder_variables(tmp_path, monkeypatch):
    from nnunet_lightseg.errors import NnUNetEnvironmentError
    from nnunet_lightseg.nnunet_env import FOLDER_VARIABLES, private_environment, require_folders

    env = private_environment(str(tmp_path / "work"), base={"KEEP": "1", "nnUNet_raw": "/users/own"})
    assert env["KEEP"] == "1" and all(os.path.isdir(env[v]) for v in FOLDER_VARIABLES)
    assert env["nnUNet_raw"] == str(tmp_path / "work" / "raw")
    require_folders(env)
    with pytest.raises(NnUNetEnvironmentError, match="set nnUNet_preprocessed, nnUNet_results as for nnUNetv2_train"):
        require_folders({"nnUNet_raw": "x"})


def test_a_command_is_echoed_line_by_line_and_stopped_at_its_timeout(tmp_path):
    log, lines = str(tmp_path / "log"), []
    run_logged(["python", "-c", "print('one'); print('two')"], dict(os.environ), log, echo=lines.append)
    assert lines == ["one", "two"] and "$ " in open(log).read()
    with pytest.raises(StepFailed, match="stopped after 0.5 s"):
        run_logged(["python", "-c", "import time; time.sleep(30)"], dict(os.environ), log, timeout=0.5)


USER_FILES = {"report/report.md": b"# my own report\n", "profile.json": b'{"mine": true}', "benchmark.log": b"my log\n",
              benchmark.STATE_FILE: b'{"my": "state"}'}


def write_user_files(folder):
    for name, content in USER_FILES.items():
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(content)


def read_files(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in USER_FILES}


def test_an_output_folder_that_is_not_ours_is_refused_and_left_as_it_was(tmp_path, user_dataset, capsys):
    folder = str(tmp_path / "bench")
    write_user_files(folder)
    status = main(["benchmark", "-d", DATASET, "-c", CONFIGURATION, "--output", folder, "--no-profile"])
    error = capsys.readouterr().err
    assert status == 2 and "did not write" in error and "--force" in error
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert read_files(folder) == USER_FILES and not os.path.exists(os.path.join(folder, output_folder.MARKER))


def test_force_moves_the_files_aside_and_the_benchmark_runs(tmp_path, user_dataset):
    folder = str(tmp_path / "bench")
    write_user_files(folder)
    lines = []
    result = benchmark.run_benchmark(arguments(tmp_path, force=True), runner=FakeRunner(user_dataset),
                                     say=lines.append)
    assert not result.failures
    [aside] = [name for name in os.listdir(folder) if name.startswith(output_folder.ASIDE_PREFIX)]
    assert read_files(os.path.join(folder, aside)) == USER_FILES  # moved, byte-identical
    assert any(f"moved what {folder} held into" in line for line in lines)
    assert output_folder.is_ours(folder) and "my" not in json.load(open(os.path.join(folder, benchmark.STATE_FILE)))
    assert open(os.path.join(folder, "report", "report.md"), "rb").read() != USER_FILES["report/report.md"]


@pytest.mark.parametrize("content, problem", [("{not json", "is not valid JSON"),
                                              ('["a", "list"]', "is not a benchmark state"),
                                              ('{"x/fold_0": 3}', "is not a benchmark state")])
def test_a_corrupt_state_file_is_a_clear_error(tmp_path, user_dataset, capsys, content, problem):
    folder = tmp_path / "bench"
    output_folder.claim(str(folder))
    (folder / benchmark.STATE_FILE).write_text(content)
    with pytest.raises(StateFileError, match=problem):
        benchmark.run_benchmark(arguments(tmp_path), runner=FakeRunner(user_dataset), say=lambda line: None)
    assert main(["benchmark", "-d", DATASET, "-c", CONFIGURATION, "--output", str(folder), "--no-profile"]) == 1
    error = capsys.readouterr().err
    assert problem in error and len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert (folder / benchmark.STATE_FILE).read_text() == content  # left for the user to look at


def test_the_state_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = str(tmp_path / benchmark.STATE_FILE)
    benchmark.save_state(path, {"a/fold_0": {"seconds": 1.0}})
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        benchmark.save_state(path, {"a/fold_0": {"seconds": 2.0}})
    assert benchmark.load_state(path) == {"a/fold_0": {"seconds": 1.0}}
    assert os.listdir(tmp_path) == [benchmark.STATE_FILE]  # no temporary file left behind


def test_when_every_trainer_fails_the_benchmark_ends_with_its_failed_summary(tmp_path, user_dataset):
    trainers = ("nnUNetTrainerBaseline_2epochs_3iters", "nnUNetTrainerVeloxSeg_2epochs_3iters")
    started = os.path.join(user_dataset["nnUNet_results"], DATASET, f"{trainers[1]}__nnUNetPlans__{CONFIGURATION}",
                           "fold_0")
    os.makedirs(started)  # a trainer that failed at start-up leaves an empty fold folder
    lines = []
    result = benchmark.run_benchmark(arguments(tmp_path), runner=FakeRunner(user_dataset, fail=trainers),
                                     say=lines.append)
    assert sorted(result.failures) == sorted(trainers)
    assert [line.split(":")[0] for line in lines[-2:]] == [f"FAILED {name}" for name in trainers]
    assert result.report_files and not any(line.startswith("report failed") for line in lines)
    table = open(tmp_path / "bench" / "report" / "report.csv").read()
    assert all(name in table for name in trainers) and "exited 1" in table


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_records_the_fold_as_interrupted_and_the_same_command_resumes(tmp_path, user_dataset, stop):
    veloxseg = "nnUNetTrainerVeloxSeg_2epochs_3iters"
    runner = FakeRunner(user_dataset, signal={veloxseg: stop})
    previous = signal.getsignal(stop)
    with pytest.raises(benchmark.BenchmarkInterrupted) as interrupted:
        benchmark.run_benchmark(arguments(tmp_path), runner=runner, say=lambda line: None)
    assert interrupted.value.signal_number == stop and signal.getsignal(stop) is previous
    message = str(interrupted.value)
    assert f"during {veloxseg} fold 0" in message and "run the same command again" in message and "\n" not in message
    state = benchmark.load_state(str(tmp_path / "bench" / benchmark.STATE_FILE))
    assert state[f"{veloxseg}/fold_0"]["interrupted"] == signal.Signals(stop).name
    assert "nnUNetTrainerBaseline_2epochs_3iters/fold_1" in state and f"{veloxseg}/fold_1" not in state

    runner.commands.clear()
    assert not benchmark.run_benchmark(arguments(tmp_path), runner=runner, say=lambda line: None).failures
    assert [(c[5], c[3], c[10:]) for c in runner.commands] == [(veloxseg, "0", ["--c"]), (veloxseg, "1", [])]
    assert "interrupted" not in benchmark.load_state(str(tmp_path / "bench" / benchmark.STATE_FILE))[
        f"{veloxseg}/fold_0"]


def test_an_unknown_dataset_is_refused_before_anything_is_written(tmp_path, user_dataset, capsys):
    folder = tmp_path / "bench"
    assert main(["benchmark", "-d", "998", "-c", CONFIGURATION, "--output", str(folder), "--no-profile"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("nnunet-lightseg benchmark: dataset '998' not found") and "Traceback" not in error
    assert not folder.exists()


def test_several_datasets_are_reported_each_and_summarised_across(tmp_path, user_dataset):
    other = "Dataset998_Other"
    preprocessed = tmp_path / "preprocessed" / other
    (preprocessed / "tiny_data").mkdir(parents=True)
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps(
        {"configurations": {CONFIGURATION: {"data_identifier": "tiny_data"}}}))
    runner, lines = FakeRunner(user_dataset), []
    result = benchmark.run_benchmark(arguments(tmp_path, datasets=(DATASET, other)), runner=runner, say=lines.append)
    assert not result.failures and {c[1] for c in runner.commands} == {DATASET, other}
    bench = tmp_path / "bench"
    for dataset in (DATASET, other):
        assert (bench / "report" / dataset / "report.md").is_file()
        assert (bench / f"benchmark_state_{dataset}.json").is_file()
    summary = (bench / "report" / "cross_dataset.md").read_text()
    assert "mean rank" in summary and "nnUNetTrainerVeloxSeg_2epochs_3iters" in summary
    with pytest.raises(UsageError, match="each dataset once"):
        arguments(tmp_path, datasets=(DATASET, DATASET))
