"""`nnunet-lightseg selfcheck`: do the default trainers train, predict and fit on this machine's device?

On generated demo data (`demo_data`), planned with the stock `nnUNetv2_plan_and_preprocess`:
1. training: each trainer runs one short epoch through the stock `nnUNetv2_train` (fold 0, then
   nnU-Net's own validation), with `nnUNet_compile=f` and with `nnUNet_compile=t` (nnU-Net's default
   on CUDA). nnU-Net never compiles on a CPU (`nnUNetTrainer._do_i_compile`), so there the compile
   leg is recorded as skipped. nnU-Net trains on through a NaN loss, so the check reads every loss
   of the final checkpoint's log and fails on one that is not finite;
2. prediction: the compile-off checkpoint predicts a held-out case with `nnUNetPredictor` on the
   device as nnU-Net predicts there (CUDA: float16 autocast; CPU: our CPU inference engine), and
   again on the CPU in float32 on the plain network graph; the softmax probabilities must agree
   within `PROBABILITY_TOLERANCE` (the segmentations' voxel agreement is reported beside);
3. figures: `profile` (`plan_profile`) on the demo plan: latency per patch (CUDA: float16
   autocast), training-step time at the plan's batch size, peak memory.
It writes selfcheck.json and selfcheck.md into its working folder (claimed as `demo`'s is).
"""
from __future__ import annotations

import json
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch

from nnunet_lightseg import output_folder, plan_profile
from nnunet_lightseg.baselines import REFERENCE, Entry
from nnunet_lightseg.benchmark import scheduled
from nnunet_lightseg.demo_data import CHANNEL_NAMES, DEFAULT_DATASET_ID, DemoSettings, write_dataset
from nnunet_lightseg.errors import StepFailed, UsageError
from nnunet_lightseg.nnunet_env import DEFAULT_TRAINERS, RAW, RESULTS, command_environment, run_logged
from nnunet_lightseg.schedules import Schedule

CONFIGURATION = "3d_fullres"
COMPILE_VARIABLE = "nnUNet_compile"
COMPILE_LEGS = {"compile_off": "f", "compile_on": "t"}
# Largest difference of a softmax probability between the device's prediction and the float32
# plain-graph CPU prediction. nnU-Net's predictor sums the tiles' logits in float16
# (`predict_from_raw_data`, `dtype=torch.half`), one step of which is 2^-8 for logits of 4-8: our
# CPU engine (fused float32 convolutions) moves a network's output by about 1e-5, which can round a
# summed logit a step or two apart and move a probability by up to a few 1e-3 (2.4e-3 seen in CI on
# VeloxSeg; in a rerun 1.6e-4 where each tile's own probabilities agreed within 2.4e-6). On CUDA
# float16 autocast moves the outputs themselves. A wrong graph or dtype moves them by far more;
# each network's engine copy is checked against its plain graph within 1e-4 of the largest logit
# in tests/test_cpu_inference.py.
PROBABILITY_TOLERANCE = {"cuda": 0.05, "cpu": 1e-2}
DEMO = DemoSettings(num_training=6, num_test=1, shape=(40, 48, 40), seed=0)


@dataclass(frozen=True)
class SelfCheckConfig:
    output: str = "lightseg-selfcheck"
    device: str = "auto"  # auto: cuda when torch sees a GPU
    trainers: tuple[str, ...] = (*DEFAULT_TRAINERS, REFERENCE)  # without schedule suffixes
    iterations: int = 3  # training iterations of the one epoch
    repeats: int = 3  # timed repeats of the profile
    force: bool = False
    demo: DemoSettings = DEMO

    def __post_init__(self):
        if self.device not in plan_profile.DEVICES:
            raise UsageError(f"--device {self.device}: use one of {', '.join(plan_profile.DEVICES)}.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: torch sees no GPU (torch.cuda.is_available() is False); "
                             "use --device cpu, or install a CUDA build of torch.")
        if self.iterations < 1 or self.repeats < 1:
            raise UsageError("--iterations and --repeats must be at least 1.")
        if not self.trainers:
            raise UsageError("--trainers: name at least one trainer.")

    @property
    def resolved_device(self) -> str:
        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device


def finite_losses(checkpoint_file: str) -> dict:
    """The losses nnU-Net logged in a checkpoint, and whether every one is finite."""
    logging = torch.load(checkpoint_file, map_location="cpu", weights_only=False)["logging"]
    losses = [float(x) for x in logging["train_losses"] + logging["val_losses"]]
    return {"finite": all(math.isfinite(x) for x in losses), "train_loss": float(logging["train_losses"][-1]),
            "val_loss": float(logging["val_losses"][-1])}


def train_leg(trainer: str, dataset: str, env: dict, device: str, log_path: str) -> dict:
    """One stock `nnUNetv2_train` of fold 0; 'ok' when it ran and every logged loss is finite."""
    try:
        run_logged(["nnUNetv2_train", dataset, CONFIGURATION, "0", "-tr", trainer, "-device", device], env, log_path)
    except StepFailed as error:
        return {"status": "failed", "error": str(error)}
    losses = finite_losses(os.path.join(model_folder(env, dataset, trainer), "fold_0", "checkpoint_final.pth"))
    return {"status": "ok" if losses["finite"] else "failed", **losses,
            **({} if losses["finite"] else {"error": "a logged loss is not finite"})}


def model_folder(env: dict, dataset: str, trainer: str) -> str:
    """Where nnUNetv2_train wrote `trainer`'s run in the results folder of `env`."""
    return os.path.join(env[RESULTS], dataset, f"{trainer}__nnUNetPlans__{CONFIGURATION}")


def _predict(folder: str, images: list[str], device: str, plain: bool):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_lightseg import cpu_inference

    predictor = nnUNetPredictor(device=torch.device(device), perform_everything_on_device=device == "cuda",
                                allow_tqdm=False, verbose=False)
    predictor.initialize_from_trained_model_folder(folder, (0,), "checkpoint_final.pth")
    image, properties = predictor.plans_manager.image_reader_writer_class().read_images(images)
    with cpu_inference.plain_path() if plain else nullcontext():
        return predictor.predict_single_npy_array(image, properties, None, None, True)


def compare_prediction(folder: str, images: list[str], device: str) -> dict:
    """The device's prediction (as nnU-Net predicts there) against the float32 plain-graph CPU one."""
    reference_labels, reference = _predict(folder, images, "cpu", plain=True)
    labels, probabilities = _predict(folder, images, device, plain=False)
    difference = float(abs(probabilities - reference).max())
    return {"status": "ok" if difference <= PROBABILITY_TOLERANCE[device] else "failed",
            "max_probability_difference": difference, "tolerance": PROBABILITY_TOLERANCE[device],
            "labels_agree": float((labels == reference_labels).mean())}


def run_selfcheck(config: SelfCheckConfig, say: Callable[[str], None] = print) -> dict:
    """Run every check; returns the result (also written as JSON and Markdown). Raises LightSegError
    when the check cannot start (folder, data, planning)."""
    device = config.resolved_device
    work = os.path.abspath(config.output)
    env = command_environment(work, config.force, private=True, say=say)
    log_path = os.path.join(work, "selfcheck.log")
    say(f"[1/4] Demo data and its plan (stock nnUNetv2_plan_and_preprocess), log: {log_path}")
    folder = write_dataset(env[RAW], config.demo)
    dataset = os.path.basename(folder)  # Dataset<ID>_<name>: nnU-Net resolves it without reading its folders
    run_logged(["nnUNetv2_plan_and_preprocess", "-d", str(DEFAULT_DATASET_ID), "-c", CONFIGURATION, "-np", "1"], env,
               log_path)
    schedule = Schedule(1, config.iterations)
    rows = [{"trainer": trainer, "trained_as": scheduled(Entry(trainer), schedule).trainer}
            for trainer in config.trainers]
    legs = {}
    for leg, flag in COMPILE_LEGS.items():
        legs[leg] = {**env, COMPILE_VARIABLE: flag, RESULTS: os.path.join(work, f"results_{leg}")}
        os.makedirs(legs[leg][RESULTS], exist_ok=True)
    say(f"[2/4] Training {len(rows)} trainers for 1 epoch x {config.iterations} iterations on {device}, "
        f"compile off and on")
    for row in rows:
        for leg, leg_env in legs.items():
            if leg == "compile_on" and device == "cpu":
                row[leg] = {"status": "skipped", "reason": "nnU-Net never compiles on a CPU"}
                continue
            row[leg] = train_leg(row["trained_as"], dataset, leg_env, device, log_path)
            say(f"  {row['trained_as']} {leg}: {_describe(row[leg])}")
    say(f"[3/4] Predicting a held-out case on {device} and on the CPU (float32, plain graph)")
    case = sorted(os.path.join(folder, "imagesTs", name) for name in os.listdir(os.path.join(folder, "imagesTs"))
                  )[:len(CHANNEL_NAMES)]  # the first held-out case, one file per channel
    for row in rows:
        if row["compile_off"]["status"] != "ok":
            row["prediction"] = {"status": "skipped", "reason": "training failed"}
            continue
        row["prediction"] = compare_prediction(model_folder(legs["compile_off"], dataset, row["trained_as"]), case,
                                               device)
        say(f"  {row['trainer']}: {_describe(row['prediction'])}")
    say(f"[4/4] Profiling on the demo plan ({device})")
    profile = plan_profile.profile(
        plan_profile.ProfileConfig(dataset, CONFIGURATION, tuple(Entry(t) for t in config.trainers),
                                   device=device, repeats=config.repeats),
        progress=lambda line: say("  " + line), env=legs["compile_off"])
    figures = {row["entry"]: row for row in profile["results"]}
    for row in rows:
        row["profile"] = figures.get(row["trainer"], {"error": "not profiled"})
    result = {"device": device, "machine": profile["machine"], "iterations": config.iterations,
              "demo": {"cases": config.demo.num_training, "shape": list(config.demo.shape)},
              "passed": all(_passed(row) for row in rows), "results": rows}
    output_folder.write_atomically(os.path.join(work, "selfcheck.json"), json.dumps(result, indent=2))
    output_folder.write_atomically(os.path.join(work, "selfcheck.md"), markdown(result))
    return result


def _passed(row: dict) -> bool:
    return all(row[check]["status"] in ("ok", "skipped") for check in (*COMPILE_LEGS, "prediction")) and \
        "error" not in row["profile"]


def _describe(check: dict) -> str:
    if check["status"] == "skipped":
        return f"skipped ({check['reason']})"
    if "error" in check:
        return f"FAILED: {check['error']}"
    if "max_probability_difference" in check:
        return (f"{check['status']}: probabilities within {check['max_probability_difference']:.1e} of the CPU's "
                f"(tolerance {check['tolerance']:g}), {100 * check['labels_agree']:.2f}% of voxels agree")
    return f"{check['status']}: train loss {check['train_loss']:.3f}, validation loss {check['val_loss']:.3f}"


def _cell(check: dict) -> str:
    if check["status"] == "skipped":
        return "skipped"
    if "error" in check:
        return "FAILED"
    if "max_probability_difference" in check:
        return f"{check['max_probability_difference']:.1e} / {100 * check['labels_agree']:.2f}%"
    return f"ok ({check['train_loss']:.3f})"


def markdown(result: dict) -> str:
    """The result as a Markdown table, with the machine and what each column means."""
    m = result["machine"]
    lines = [f"# nnunet-lightseg selfcheck: {'passed' if result['passed'] else 'FAILED'}", "",
             f"Device {result['device']}" + (f" ({m['gpu']}, CUDA {m['cuda']})" if "gpu" in m else f" ({m['cpu']})") +
             f", torch {m['torch']}, nnunetv2 {m['nnunetv2']}, nnunet-lightseg {m['nnunet_lightseg']}; demo data "
             f"{result['demo']['cases']} cases of {'x'.join(map(str, result['demo']['shape']))}, 1 epoch x "
             f"{result['iterations']} iterations.", "",
             "| trainer | train, compile off (loss) | train, compile on (loss) | prediction vs CPU: max "
             "probability difference / voxels agreeing | latency per patch (ms) | training step (s) | peak memory, "
             "inference / training (MB) |",
             "|---|---|---|---|---|---|---|"]
    for row in result["results"]:
        figures = row["profile"]
        measured = ["FAILED"] * 3 if "error" in figures else [
            f"{1000 * figures['latency_s']:.1f}", f"{figures['train_step_s']:.3f} (batch {figures['batch_size']})",
            f"{figures['peak_memory_inference_mb']:.0f} / {figures['peak_memory_training_mb']:.0f}"]
        lines.append(f"| {row['trainer']} | {_cell(row['compile_off'])} | {_cell(row['compile_on'])} | "
                     f"{_cell(row['prediction'])} | " + " | ".join(measured) + " |")
    failures = [f"- {row['trainer']} {check}: {row[check].get('error', row[check].get('status'))}"
                for row in result["results"] for check in (*COMPILE_LEGS, "prediction", "profile")
                if row[check].get("status") == "failed" or "error" in row[check]]
    lines += ["", "Losses are the last epoch's training loss (nnU-Net's Dice + CE); every logged loss must be "
              "finite. The prediction runs on the device as nnU-Net predicts there (CUDA: float16 autocast) and is "
              "compared with a float32 CPU prediction on the plain network graph. Latency: one patch of the plan, "
              "median; training step: forward, backward and SGD step at the plan's batch size; peak memory: CUDA "
              "allocator peak on a GPU, process peak RSS on a CPU (`nnunet-lightseg profile`)."]
    return "\n".join(lines + (["", "Failures:", *failures] if failures else [])) + "\n"
