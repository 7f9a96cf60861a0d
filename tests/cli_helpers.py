"""Run the stock nnU-Net command-line tools in subprocesses, as a user would.

Integration tests add their trainers to `CLI_TRAINERS` in test_cli_integration.py; this module only
knows how to run commands with a clean nnU-Net environment (through `nnunet_lightseg.nnunet_env`).
"""
from __future__ import annotations

import os

from nnunet_lightseg.errors import StepFailed
from nnunet_lightseg.nnunet_env import AUGMENTATION_WORKERS, private_environment, run_logged

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def clean_env(root: str, **extra: str) -> dict:
    """The environment a user has: nnU-Net's three folders under root and nothing of ours.

    nnUNet_extTrainer is removed: our trainers must be found with nothing set up.
    """
    user = {k: v for k, v in os.environ.items()
            if k not in ("nnUNet_extTrainer",) and not k.startswith("NNUNET_LIGHTSEG")}
    env = private_environment(root, base=user)
    env.update({AUGMENTATION_WORKERS: "1", "OMP_NUM_THREADS": "2", "nnUNet_compile": "false"})
    env.update(extra)
    return env


# For nnUNetv2_train: augmentation in the training process, no worker processes to start (the
# planner needs nnUNet_n_proc_DA >= 1, so only training gets this).
IN_PROCESS_AUGMENTATION = {AUGMENTATION_WORKERS: "0"}


def run(args: list[str], env: dict, timeout: int = 900) -> str:
    """Run a stock command; fail the test with the command's own output if it fails."""
    try:
        return run_logged(args, env, os.devnull, timeout=timeout)
    except StepFailed as error:
        raise AssertionError(f"{error}\n{error.output[-6000:]}") from None
