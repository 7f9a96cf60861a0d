"""Does a trainer start to learn? A short in-process run on a preprocessed dataset, with diagnostics.

    nnUNet_n_proc_DA=0 python -m nnunet_lightseg.measure.learning_probe -d 4 -c 3d_fullres \\
        -tr nnUNetTrainerLightMedSeg --steps 60 [--same-batch]

Runs the trainer's own `train_step` (nnU-Net's recipe, loss, augmentation; fold 0) on CPU for
`--steps` steps. Every 10 steps it prints the mean loss of the last 10 steps, the hard Dice of each
foreground class and the predicted foreground fraction on the current training batch, and per
top-level module how far its weights moved from their initial values (|w - w0| / |w0|). A network
that collapses to background shows a foreground fraction of 0; one whose deep path does not learn
shows its deep modules standing still while its head moves. `--same-batch` trains on one batch
throughout (can it fit it at all?). Needs nnUNet_preprocessed set and the dataset preprocessed.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch


def _trainer(dataset: str, configuration: str, trainer_name: str):
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_lightseg import trainers

    folder = os.path.join(os.environ["nnUNet_preprocessed"], maybe_convert_to_dataset_name(dataset))
    with open(os.path.join(folder, "nnUNetPlans.json")) as f:
        plans = json.load(f)
    with open(os.path.join(folder, "dataset.json")) as f:
        dataset_json = json.load(f)
    plans["continue_training"] = False
    trainer = getattr(trainers, trainer_name)(plans, configuration, 0, dataset_json, torch.device("cpu"))
    trainer.initialize()
    return trainer


def _module_key(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


def movement(network: torch.nn.Module, initial: dict) -> dict[str, float]:
    """|w - w0| / |w0| per top-level module (`encoder.2`, `head`, ...)."""
    moved: dict[str, list[float]] = {}
    for name, p in network.named_parameters():
        key = _module_key(name)
        delta, size = moved.setdefault(key, [0.0, 0.0])
        moved[key] = [delta + (p.detach() - initial[name]).pow(2).sum().item(), size + initial[name].pow(2).sum().item()]
    return {key: (delta / size) ** 0.5 if size else 0.0 for key, (delta, size) in moved.items()}


def batch_dice(network: torch.nn.Module, batch: dict, num_classes: int) -> tuple[list[float], float]:
    """Hard Dice per foreground class and the predicted foreground fraction on a training batch."""
    network.eval()
    with torch.no_grad():
        output = network(batch["data"])
    network.train()
    segmentation = (output[0] if isinstance(output, (list, tuple)) else output).argmax(1)
    target = (batch["target"][0] if isinstance(batch["target"], list) else batch["target"])[:, 0]
    dice = []
    for c in range(1, num_classes):
        a, b = segmentation == c, target == c
        dice.append(float(2 * (a & b).sum() / max(1, int(a.sum() + b.sum()))))
    return dice, float((segmentation > 0).float().mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("-tr", "--trainer", required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--same-batch", action="store_true", help="train on the first batch throughout")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    trainer = _trainer(args.dataset, args.configuration, args.trainer)
    loader, _ = trainer.get_dataloaders()
    network = trainer.network
    initial = {name: p.detach().clone() for name, p in network.named_parameters()}
    num_classes = len(trainer.label_manager.foreground_labels) + 1
    losses, batch, start = [], None, time.time()
    for step in range(1, args.steps + 1):
        batch = batch if args.same_batch and batch is not None else next(loader)
        losses.append(float(trainer.train_step(batch)["loss"]))
        if step % 10 == 0:
            dice, foreground = batch_dice(network, batch, num_classes)
            moved = " ".join(f"{k}={v:.3f}" for k, v in movement(network, initial).items())
            print(f"step {step}: loss {np.mean(losses[-10:]):.4f}, Dice {' '.join(f'{d:.3f}' for d in dice)}, "
                  f"foreground {foreground:.4f}, {(time.time() - start) / step:.2f} s/step\n  moved: {moved}",
                  flush=True)


if __name__ == "__main__":
    main()
