"""`nnunet-lightseg demo`: the whole stock nnU-Net pipeline on built-in procedural data.

Generate the demo dataset -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train (a short CPU
schedule, `<trainer>_<E>epochs_<I>iters`) -> nnUNetv2_predict on the held-out cases ->
nnUNetv2_evaluate_simple, printing the Dice per class. Everything goes into one working folder
(./lightseg-demo by default, claimed through `output_folder` as benchmark's is) unless
`use_nnunet_env` asks for the user's own nnUNet_raw/_preprocessed/_results. nnU-Net's worker
counts are chosen for the machine unless the user set them (`nnunet_env.choose_workers`).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable

from nnunet_lightseg.demo_data import DEFAULT_DATASET_ID, LABELS, DemoSettings, write_dataset
from nnunet_lightseg.errors import UsageError
from nnunet_lightseg.nnunet_env import RAW, command_environment, require_folders, run_logged
from nnunet_lightseg.schedules import Schedule, scheduled_name, split

NOISY_PREFIXES = ("  Inspecting module", "Searching in", "Searching for class")  # nnU-Net's trainer search


@dataclass(frozen=True)
class DemoConfig:
    output: str = "lightseg-demo"
    trainer: str = "nnUNetTrainerUltraLightUNet"  # without a schedule suffix
    epochs: int = 10
    iterations: int = 25  # training iterations per epoch
    device: str = "cpu"
    use_nnunet_env: bool = False  # the user's nnUNet_raw/_preprocessed/_results instead of `output`
    force: bool = False  # move the files of an output folder that is not ours aside instead of refusing

    def __post_init__(self):
        if self.epochs < 1 or self.iterations < 1:
            raise UsageError("--epochs and --iterations must be at least 1")
        if not split(self.trainer)[1].is_default:
            raise UsageError(f"--trainer {self.trainer}: give the trainer without a schedule suffix; the demo names "
                             f"its schedule from --epochs and --iterations.")

    @property
    def scheduled_trainer(self) -> str:
        return scheduled_name(self.trainer, Schedule(self.epochs, self.iterations))


@dataclass(frozen=True)
class DemoResult:
    trainer: str  # as trained, schedule included
    dice: dict[str, float]  # class name -> mean Dice over the held-out cases
    mean_dice: float
    work: str  # the working folder


def _echo(say: Callable[[str], None]) -> Callable[[str], None]:
    """Pass on a command's useful lines, indented and shortened."""
    def echo(line: str) -> None:
        if line.strip() and not line.startswith(NOISY_PREFIXES):
            say("  " + line[:200])
    return echo


def run_demo(config: DemoConfig, say: Callable[[str], None] = print) -> DemoResult:
    """Run the demo; raises LightSegError (StepFailed when a stock command fails)."""
    work = os.path.abspath(config.output)
    if config.use_nnunet_env:
        require_folders()
    env = command_environment(work, config.force, private=not config.use_nnunet_env, say=say)
    log_path = os.path.join(work, "demo.log")
    echo = _echo(say)

    def step(command: list[str]) -> None:
        say("$ " + " ".join(command))
        run_logged(command, env, log_path, echo=echo)

    started = time.time()
    dataset = str(DEFAULT_DATASET_ID)
    trainer = config.scheduled_trainer
    say(f"[1/5] Writing the demo dataset into {env[RAW]}")
    folder = write_dataset(env[RAW], DemoSettings())
    say(f"[2/5] Planning and preprocessing (stock nnU-Net), log: {log_path}")
    step(["nnUNetv2_plan_and_preprocess", "-d", dataset, "-c", "3d_fullres", "-np", "1", "--verify_dataset_integrity"])
    say(f"[3/5] Training {trainer} on fold 0 ({config.epochs} epochs x {config.iterations} iterations, "
        f"device {config.device})")
    step(["nnUNetv2_train", dataset, "3d_fullres", "0", "-tr", trainer, "-device", config.device])
    predictions = os.path.join(work, "predictions")
    say(f"[4/5] Predicting the held-out cases into {predictions}")
    step(["nnUNetv2_predict", "-i", os.path.join(folder, "imagesTs"), "-o", predictions, "-d", dataset,
          "-c", "3d_fullres", "-tr", trainer, "-f", "0", "-device", config.device, "-npp", "1", "-nps", "1"])
    say("[5/5] Evaluating with nnU-Net's evaluator")
    foreground = [str(v) for v in LABELS.values() if v > 0]
    step(["nnUNetv2_evaluate_simple", os.path.join(folder, "labelsTs"), predictions, "-l", *foreground, "-np", "1"])
    with open(os.path.join(predictions, "summary.json")) as f:
        summary = json.load(f)
    names = {str(v): k for k, v in LABELS.items()}
    result = DemoResult(trainer, {names.get(label, label): metrics["Dice"] for label, metrics in summary["mean"].items()},
                        summary["foreground_mean"]["Dice"], work)
    say(f"\nDice on {len(summary['metric_per_case'])} held-out cases ({trainer}, {time.time() - started:.0f} s in all):")
    for name, dice in result.dice.items():
        say(f"  {name:>8}: {dice:.3f}")
    say(f"  {'mean':>8}: {result.mean_dice:.3f}")
    say(f"Everything is in {work}")
    return result
