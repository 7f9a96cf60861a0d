"""Bad input to `profile` and `demo` (issue 13): an exit status, one or two lines without a
traceback, and the user's files byte-identical afterwards. In-process and cheap: nothing trains."""
import json
import os

import pytest

from nnunet_lightseg import plan_profile, registry, trainers
from nnunet_lightseg.cli import EXIT_FAILED, EXIT_USAGE, main
from nnunet_lightseg.errors import InvalidScheduleName, NnUNetEnvironmentError, UsageError
from nnunet_lightseg.nnunet_env import WORKER_VARIABLES, choose_workers, machine_workers, private_environment
from nnunet_lightseg.schedules import split

USER_BYTES = b"the user's own file\n"


def error_line(capsys) -> str:
    """What the command printed on stderr, checked to be one or two lines without a traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2 and "Traceback" not in err and lines[0].startswith("nnunet-lightseg "), err
    return err


def user_file(path) -> str:
    path.write_bytes(USER_BYTES)
    return str(path)


def small(model="UltraLightUNet_T", channels="1", classes="2", patch=("16", "16", "16")) -> list[str]:
    return ["profile", model, "--in-channels", channels, "--classes", classes, "--patch", *patch]


@pytest.mark.parametrize("extra, message", [
    (["--repeats", "0"], "--repeats and --threads must be at least 1"),
    (["--threads", "0"], "--repeats and --threads must be at least 1"),
    (["--patch", "16", "16", "16", "16"], "two (2D) or three (3D) sizes"),
    (["--classes", "0"], "must be positive"),
])
def test_profile_refuses_bad_counts(capsys, extra, message):
    assert main(small() + extra) == EXIT_USAGE  # the last of a repeated option counts
    assert message in error_line(capsys)


@pytest.mark.parametrize("request_", [small(channels="1000000"), small(classes="100000"),
                                      small(patch=("100000", "100000", "100000")), small(patch=("512", "512", "512"))])
def test_profile_refuses_sizes_too_large_to_allocate_before_building(capsys, request_):
    assert main(request_ + ["--no-latency"]) == EXIT_USAGE
    assert "too large to profile" in error_line(capsys)


def test_a_patch_too_small_for_the_network_is_one_line(capsys):
    assert main(small("VeloxSeg", patch=("8", "8", "8")) + ["--no-latency"]) == EXIT_USAGE
    assert "VeloxSeg" in error_line(capsys)


def test_profile_says_when_the_network_padded_the_patch(capsys):
    assert main(small("UltraLightUNet_M", patch=("4", "4", "4")) + ["--no-latency", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["patch"] == [4, 4, 4] and result["padded_patch"] == [32, 32, 32]
    assert main(small("UltraLightUNet_M", patch=("4", "4", "4")) + ["--no-latency"]) == 0
    assert "pads the patch [4, 4, 4] to [32, 32, 32]" in capsys.readouterr().out
    assert main(small(patch=("32", "32", "32")) + ["--no-latency", "--json"]) == 0
    assert "padded_patch" not in json.loads(capsys.readouterr().out)


def fake_profile(rows):
    def profile(config, progress=print):
        return {"dataset": "Dataset987_X", "configuration": config.configuration, "reference": "nnUNetTrainer",
                "device": "cpu", "repeats": 1, "results": rows,
                "machine": {"nnunet_lightseg": "0", "cpu": "x", "torch": "x", "nnunetv2": "x", "torch_threads": 1}}
    return profile


def test_a_failed_profile_row_gives_a_failing_exit(capsys, monkeypatch, tmp_path):
    rows = [{"entry": "nnUNetTrainer", "params": 1, "gmac": 1.0, "latency_s": 1.0},
            {"entry": "nnUNetTrainerLightMedSeg", "error": "UnsupportedConfigurationError: ..."}]
    monkeypatch.setattr(plan_profile, "profile", fake_profile(rows))
    output = str(tmp_path / "profile.json")
    assert main(["profile", "-d", "987", "-c", "2d", "--output", output]) == EXIT_FAILED
    err = capsys.readouterr().err  # the table's progress lines, then our line
    assert "Traceback" not in err and "nnUNetTrainerLightMedSeg could not be profiled" in err.splitlines()[-1]
    monkeypatch.setattr(plan_profile, "profile", fake_profile(rows[:1]))
    assert main(["profile", "-d", "987", "-c", "2d", "--output", output]) == 0  # its own profile is rewritten


@pytest.mark.parametrize("extra", [["--repeats", "0"], ["--threads", "0"], ["--tile-step", "0"]])
def test_profile_of_a_plan_refuses_bad_counts(capsys, monkeypatch, extra):
    monkeypatch.setattr(plan_profile, "profile", pytest.fail)
    assert main(["profile", "-d", "987", "-c", "3d_fullres", *extra]) == EXIT_USAGE
    error_line(capsys)


def test_profile_output_that_is_not_a_profile_of_ours_is_left_alone(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(plan_profile, "profile", pytest.fail)  # refused before profiling
    output = user_file(tmp_path / "mine.json")
    assert main(["profile", "-d", "987", "-c", "2d", "--output", output]) == EXIT_USAGE
    assert "is not a profile written by nnunet-lightseg" in error_line(capsys)
    assert open(output, "rb").read() == USER_BYTES


def test_a_3d_network_on_a_2d_plan_is_named():
    from test_trainer_base import configuration

    manager, conf = configuration((32, 32), [[2, 2]] * 2)
    with pytest.raises(registry.UnsupportedConfigurationError, match="LightMedSeg is a 3D network .* on 2D"):
        plan_profile.build_network(trainers.nnUNetTrainerLightMedSeg, manager, conf,
                                   {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}}, False)


def demo(output, *extra) -> list[str]:
    return ["demo", "--output", str(output), *extra]


def test_demo_output_on_a_user_file_or_through_it(capsys, tmp_path):
    path = user_file(tmp_path / "notes.txt")
    assert main(demo(path)) == EXIT_USAGE
    assert "is a file, not a folder" in error_line(capsys)
    assert main(demo(os.path.join(path, "sub"))) == EXIT_USAGE
    assert "cannot write there" in error_line(capsys)
    assert open(path, "rb").read() == USER_BYTES and os.listdir(tmp_path) == ["notes.txt"]


def test_demo_output_holding_user_files_is_refused(capsys, tmp_path):
    path = user_file(tmp_path / "demo.log")
    assert main(demo(tmp_path)) == EXIT_USAGE
    assert "--force" in error_line(capsys)
    assert open(path, "rb").read() == USER_BYTES and os.listdir(tmp_path) == ["demo.log"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_demo_output_in_a_read_only_folder(capsys, tmp_path):
    tmp_path.chmod(0o555)
    try:
        assert main(demo(tmp_path / "new")) == EXIT_USAGE
        assert "cannot write there" in error_line(capsys)
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.parametrize("variable, value", [("nnUNet_n_proc_DA", "0"), ("nnUNet_n_proc_DA", "two"),
                                             ("nnUNet_def_n_proc", "1.5"), ("nnUNet_def_n_proc", "")])
def test_demo_refuses_worker_counts_nnunet_cannot_take_before_writing(capsys, monkeypatch, tmp_path, variable, value):
    monkeypatch.setenv(variable, value)
    assert main(demo(tmp_path / "demo")) == EXIT_FAILED
    assert f"{variable}={value!r}" in error_line(capsys)
    assert not os.path.exists(tmp_path / "demo")


def test_demo_refuses_bad_schedules(capsys, tmp_path):
    assert main(demo(tmp_path / "demo", "--epochs", "0")) == EXIT_USAGE
    assert "at least 1" in error_line(capsys)


def test_worker_counts_are_chosen_for_the_machine_unless_set(tmp_path):
    env = {"nnUNet_n_proc_DA": "3"}
    line = choose_workers(env)
    assert env == {"nnUNet_def_n_proc": str(machine_workers()), "nnUNet_n_proc_DA": "3"}
    assert 1 <= machine_workers() <= 4 and "nnUNet_n_proc_DA=3" in line and line.count("\n") == 0
    private = private_environment(str(tmp_path), base={})
    assert all(private[v] == str(machine_workers()) for v in WORKER_VARIABLES)
    with pytest.raises(NnUNetEnvironmentError, match="planner"):
        private_environment(str(tmp_path), base={"nnUNet_n_proc_DA": "0"})  # the demo data is planned
    assert "nnUNet_n_proc_DA=0" in choose_workers({"nnUNet_n_proc_DA": "0"}, planning=False)  # training takes 0
    with pytest.raises(NnUNetEnvironmentError):
        choose_workers({"nnUNet_def_n_proc": "0"}, planning=False)


@pytest.mark.parametrize("name, problem", [("nnUNetTrainerUltraLightUNet_05epochs", "without leading zeros"),
                                           ("nnUNetTrainerLightMedSeg_0epochs", "at least 1")])  # a name test_trainer_base does not ask for: each is reported once per process
def test_malformed_schedules_are_a_lookup_failure_not_another_schedule(name, problem, capsys):
    with pytest.raises(InvalidScheduleName, match=problem):
        split(name)
    assert not hasattr(trainers, name)  # AttributeError, as nnU-Net's trainer search expects


def test_debug_shows_the_traceback_of_an_expected_error(monkeypatch):
    with pytest.raises(UsageError):
        main(small() + ["--repeats", "0", "--debug"])
    monkeypatch.setenv("NNUNET_LIGHTSEG_DEBUG", "1")
    with pytest.raises(UsageError):
        main(small() + ["--repeats", "0"])


def test_benchmark_on_the_demo_data_refuses_worker_counts_nnunet_cannot_take(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    assert main(["benchmark", "--output", str(tmp_path / "bench"), "--no-profile"]) == EXIT_FAILED
    assert "nnUNet_n_proc_DA='0'" in error_line(capsys)
    assert not os.path.exists(tmp_path / "bench" / "raw")  # nothing planned or trained


@pytest.mark.parametrize("command", [["report", "-d", "998", "-c", "3d_fullres"],
                                     ["benchmark", "-d", "998", "-c", "3d_fullres", "--no-profile"]])
def test_an_unknown_dataset_is_one_line(capsys, monkeypatch, tmp_path, command):
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    output = ["--output", str(tmp_path / "bench")] if command[0] == "benchmark" else []
    assert main(command + output) == EXIT_FAILED
    err = error_line(capsys)
    assert len(err.strip().splitlines()) == 1 and "dataset '998' not found" in err, err
    assert not (tmp_path / "bench").exists()
