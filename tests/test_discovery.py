"""The stock nnU-Net trainer search finds our trainers with nothing set up (docs/discovery.md)."""
import os
import subprocess
import sys
import textwrap

from nnunet_lightseg import _startup_hook

FIND = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find; "
        "import sys; c = find(sys.argv[1]); print('FOUND', c.__module__, c.__name__)")


def find_in_clean_process(trainer: str, env: dict) -> str:
    result = subprocess.run([sys.executable, "-c", FIND, trainer], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    return [line for line in result.stdout.splitlines() if line.startswith("FOUND")][0]


def user_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer" and not k.startswith("NNUNET_LIGHTSEG")}
    env.update(extra)
    return env


def test_hook_appends_once_and_keeps_user_entries():
    environ = {"nnUNet_extTrainer": os.pathsep.join(["/a", "/b"])}
    _startup_hook.extend_ext_trainer_path(environ)
    _startup_hook.extend_ext_trainer_path(environ)
    assert environ["nnUNet_extTrainer"].split(os.pathsep) == ["/a", "/b", _startup_hook.DISCOVERY_DIR]
    empty = {}
    _startup_hook.extend_ext_trainer_path(empty)
    assert empty["nnUNet_extTrainer"] == _startup_hook.DISCOVERY_DIR


def test_a_fresh_process_finds_our_trainers_and_short_schedules():
    line = find_in_clean_process("nnUNetTrainerUltraLightUNet_3epochs_5iters", user_env())
    assert line == "FOUND nnunet_lightseg.trainers nnUNetTrainerUltraLightUNet_3epochs_5iters"
    line = find_in_clean_process("nnUNetTrainerUltraLightUNet_3epochs", user_env())  # as earlier versions named it
    assert line == "FOUND nnunet_lightseg.trainers nnUNetTrainerUltraLightUNet_3epochs"
    line = find_in_clean_process("nnUNetTrainerUltraLightUNet_M", user_env())
    assert line == "FOUND nnunet_lightseg.trainers.ultralightunet nnUNetTrainerUltraLightUNet_M"


def test_an_invalid_schedule_is_not_found_and_our_reason_is_printed():
    result = subprocess.run([sys.executable, "-c", FIND, "nnUNetTrainerVeloxSeg_007epochs"], env=user_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode != 0 and "Could not find requested nnunet trainer" in result.stderr
    reason = [line for line in result.stderr.splitlines() if line.startswith("nnunet-lightseg:")]
    assert reason == ["nnunet-lightseg: nnUNetTrainerVeloxSeg_007epochs is not a valid schedule name: write the "
                      "numbers without leading zeros, e.g. nnUNetTrainerVeloxSeg_7epochs "
                      "(<trainer>_<E>epochs_<I>iters_seed<S>, each part optional, docs/training.md)"]


def test_the_users_own_ext_trainer_entries_keep_working(tmp_path):
    (tmp_path / "my_trainers.py").write_text(textwrap.dedent("""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        class nnUNetTrainerMine(nnUNetTrainer):
            pass
    """))
    env = user_env(nnUNet_extTrainer=str(tmp_path))
    assert find_in_clean_process("nnUNetTrainerMine", env) == "FOUND my_trainers nnUNetTrainerMine"
    assert find_in_clean_process("nnUNetTrainerUltraLightUNet", env).endswith("nnUNetTrainerUltraLightUNet")
