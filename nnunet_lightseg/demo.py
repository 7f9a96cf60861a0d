"""`nnunet-lightseg demo`: the whole stock nnU-Net pipeline on built-in procedural data.

Generate the demo dataset -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train (a short CPU
schedule) -> nnUNetv2_predict on the held-out cases -> nnUNetv2_evaluate_simple, printing the
Dice per class. Everything goes into one working folder (./lightseg-demo by default) unless
--use-nnunet-env asks for the user's own nnUNet_raw/_preprocessed/_results.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from nnunet_lightseg.demo_data import DEFAULT_DATASET_ID, LABELS, DemoSettings, write_dataset

NOISY_PREFIXES = ("  Inspecting module", "Searching in", "Searching for class")


def nnunet_command(name: str) -> str:
    """The stock nnU-Net console script of this Python environment."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = beside if os.path.exists(beside) else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install nnU-Net into this environment (pip install nnunet-lightseg).")
    return found


def run_step(command: list[str], env: dict, log_path: str) -> None:
    """Run a stock command, echoing its useful output and keeping all of it in log_path."""
    print("$ " + " ".join(command), flush=True)
    with open(log_path, "a") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   bufsize=1)
        for line in process.stdout:
            log.write(line)
            if not line.startswith(NOISY_PREFIXES) and line.strip():
                print("  " + line.rstrip()[:200], flush=True)
        if process.wait() != 0:
            raise SystemExit(f"step failed (exit {process.returncode}): {' '.join(command)}\nfull log: {log_path}")


def demo_environment(args) -> tuple[dict, str]:
    env = dict(os.environ)
    if args.use_nnunet_env:
        missing = [v for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results") if not env.get(v)]
        if missing:
            raise SystemExit(f"--use-nnunet-env needs {', '.join(missing)} set; or leave the flag off to work in "
                             f"{args.output!r}.")
        work = os.path.abspath(args.output)
    else:
        work = os.path.abspath(args.output)
        for variable, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                              ("nnUNet_results", "results")):
            env[variable] = os.path.join(work, sub)
    env.setdefault("nnUNet_n_proc_DA", "1")
    env["NNUNET_LIGHTSEG_ITERATIONS"] = str(args.iterations)
    env["NNUNET_LIGHTSEG_VAL_ITERATIONS"] = str(max(1, args.iterations // 4))
    os.makedirs(work, exist_ok=True)
    return env, work


def run_demo(args) -> int:
    if args.epochs < 1 or args.iterations < 1:
        raise SystemExit("--epochs and --iterations must be at least 1")
    env, work = demo_environment(args)
    log_path = os.path.join(work, "demo.log")
    started = time.time()
    dataset = str(DEFAULT_DATASET_ID)
    trainer = f"{args.trainer}_{args.epochs}epoch{'' if args.epochs == 1 else 's'}"

    print(f"[1/5] Writing the demo dataset into {env['nnUNet_raw']}", flush=True)
    folder = write_dataset(env["nnUNet_raw"], DemoSettings())
    print(f"[2/5] Planning and preprocessing (stock nnU-Net), log: {log_path}", flush=True)
    run_step([nnunet_command("nnUNetv2_plan_and_preprocess"), "-d", dataset, "-c", "3d_fullres", "-np", "1",
              "--verify_dataset_integrity"], env, log_path)
    print(f"[3/5] Training {trainer} on fold 0 ({args.epochs} epochs x {args.iterations} iterations, "
          f"device {args.device})", flush=True)
    run_step([nnunet_command("nnUNetv2_train"), dataset, "3d_fullres", "0", "-tr", trainer, "-device", args.device],
             env, log_path)
    predictions = os.path.join(work, "predictions")
    print(f"[4/5] Predicting the held-out cases into {predictions}", flush=True)
    run_step([nnunet_command("nnUNetv2_predict"), "-i", os.path.join(folder, "imagesTs"), "-o", predictions,
              "-d", dataset, "-c", "3d_fullres", "-tr", trainer, "-f", "0", "-device", args.device,
              "-npp", "1", "-nps", "1"], env, log_path)
    print("[5/5] Evaluating with nnU-Net's evaluator", flush=True)
    foreground = [str(v) for v in LABELS.values() if v > 0]
    run_step([nnunet_command("nnUNetv2_evaluate_simple"), os.path.join(folder, "labelsTs"), predictions,
              "-l", *foreground, "-np", "1"], env, log_path)
    summary = json.load(open(os.path.join(predictions, "summary.json")))
    names = {str(v): k for k, v in LABELS.items()}
    print(f"\nDice on {len(summary['metric_per_case'])} held-out cases ({trainer}, "
          f"{time.time() - started:.0f} s in all):")
    for label, metrics in summary["mean"].items():
        print(f"  {names.get(label, label):>8}: {metrics['Dice']:.3f}")
    print(f"  {'mean':>8}: {summary['foreground_mean']['Dice']:.3f}")
    print(f"Everything is in {work}")
    return 0
