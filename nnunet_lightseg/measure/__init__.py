"""Measurement scripts behind the figures in docs/, each run as `python -m nnunet_lightseg.measure.<name>`.

- `inference_steps`: per-patch CPU latency of each step of the CPU inference engine (docs/performance.md)
- `engine_against`: the CPU inference engine of a git revision against the working tree's, per patch,
  interleaved in one process (docs/performance.md)
- `narrow_convs`: convs with few output channels, with the whole kernel and with their taps split
  (docs/performance.md)
- `unit_convs`: 1x1 convs as a matrix product and on oneDNN, by size (docs/performance.md)
- `freed_memory`: per-patch time, page faults and peak memory with glibc's defaults and with freed
  memory kept (docs/performance.md)
- `onnx_export_check`: ONNX export of each model, its dynamic axes and parity with torch (docs/deployment.md)
- `predictor_per_case`: seconds per case through nnU-Net's own predictor (docs/performance.md)
- `predictor_stages`: seconds per case of the stock predictor and of `nnunet-lightseg predict`, by
  stage, under nnUNetv2_predict's defaults and a fast setting (docs/performance.md)
- `ct_like`: a generated CT-like dataset (1.5 mm, 200^3 by default), planned by nnU-Net, for
  `predictor_stages` on a large case
- `training_layout`: CPU training step, default against channels-last layout (docs/performance.md)
- `lightmedseg_stability`: LightMedSeg under nnU-Net's recipe on a synthetic task
  (docs/architectures/lightmedseg.md)
- `gradient_flow`: how far nnU-Net's loss gradient reaches into each network at initialisation
  (docs/training.md; the registry contract test's gradient check)
- `learning_probe`: a short in-process training run on a preprocessed dataset with loss, Dice,
  foreground fraction and per-module weight movement (docs/training.md)

They run the paper models' default variants (`nnunet_env.DEFAULT_MODELS`) unless given `--models`.
"""
import argparse

import torch


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a markdown table: the header, its rule, then one line per row."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def kernel_timing_arguments(doc: str, argv=None):
    """The arguments of the kernel timings (`unit_convs`, `narrow_convs`): --threads, which it sets
    for torch, and --rounds."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args
