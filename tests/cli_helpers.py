"""Run the stock nnU-Net command-line tools in subprocesses, as a user would.

Integration tests add their trainers to `CLI_TRAINERS` in test_cli_integration.py; this module only
knows how to run commands with a clean nnU-Net environment.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def command(name: str) -> str:
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.path.exists(beside) else shutil.which(name) or name


def clean_env(root: str, **extra: str) -> dict:
    """The environment a user has: nnU-Net's three folders under root and nothing of ours.

    nnUNet_extTrainer is removed: our trainers must be found with nothing set up.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("nnUNet_extTrainer",) and not k.startswith("NNUNET_LIGHTSEG")}
    for variable, sub in zip(NNUNET_VARIABLES, ("raw", "preprocessed", "results")):
        env[variable] = os.path.join(root, sub)
        os.makedirs(env[variable], exist_ok=True)
    env.update({"nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "2", "nnUNet_compile": "false"})
    env.update(extra)
    return env


# For nnUNetv2_train: augmentation in the training process, no worker processes to start (the
# planner needs nnUNet_n_proc_DA >= 1, so only training gets this).
IN_PROCESS_AUGMENTATION = {"nnUNet_n_proc_DA": "0"}


def run(args: list[str], env: dict, timeout: int = 900) -> str:
    """Run a stock command; fail the test with the command's own output if it fails."""
    args = [command(args[0]), *args[1:]]
    result = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-6000:]}")
    return result.stdout
