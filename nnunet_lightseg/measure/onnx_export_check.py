"""Which default models export to ONNX with dynamic spatial axes, and how close ONNX Runtime is to torch.

Each model, randomly initialised on the Hippocampus plan (1 channel, 3 classes, patch 40x56x40,
three 2x steps), goes through `onnx_export.export_network`, the export and checks of `nnunet-lightseg
export`: exported with dynamic spatial axes, run on a batch of two at the patch + 8 voxels per axis,
exported again with fixed axes if that fails or disagrees; the figure is max |ONNX - torch| /
max |logit| at the patch (docs/deployment.md).

    python -m nnunet_lightseg.measure.onnx_export_check [--models ...] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from nnunet_lightseg import registry
from nnunet_lightseg.nnunet_env import DEFAULT_MODELS
from nnunet_lightseg.onnx_export import export_network

PATCH, STEPS = (40, 56, 40), [(2, 2, 2)] * 3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), patch {PATCH}\n\n"
          "| model | spatial axes | max relative difference at the patch | export and checks, s |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            torch.manual_seed(0)
            network = registry.get(name).create(registry.Plan(1, 3, PATCH, STEPS)).eval()
            start = time.perf_counter()
            parity = export_network(network, 1, list(PATCH), os.path.join(folder, f"{name}.onnx"), args.threads)
            print(f"| {name} | {'dynamic' if parity['dynamic_spatial_axes'] else 'fixed'} | "
                  f"{parity['max_relative_difference_at_patch']:.1e} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
