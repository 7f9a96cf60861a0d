"""Which models export to ONNX with dynamic spatial axes, how close the runtimes are to torch, and how fast.

Each model, randomly initialised on the Hippocampus plan (1 channel, 3 classes, patch 40x56x40,
three 2x steps; first nnU-Net's own PlainConvUNet of that plan, for reference), goes through
`onnx_export.export_network`, the export and checks of `nnunet-lightseg export`: exported with
dynamic spatial axes, run on a batch of two at the patch + 8 voxels per axis, exported again with
fixed axes if that fails or disagrees; the figure is the export's parity figure at the patch,
max |softmax(ONNX) - softmax(torch)| (docs/deployment.md). Then one patch is timed both ways,
interleaved (`timing.timed_runs`, median of --repeats after one warm-up): torch as nnU-Net's
predictor runs the network on a CPU (inference mode; ours through our inference engine,
`cpu_inference`), and the exported model in an ONNX Runtime session with as many threads. Where
OpenVINO is installed (`nnunet-lightseg[openvino]`), the exported model as `predict --onnx
--runtime openvino` runs it (`onnx_runtimes.OpenVinoModel`: float32, as many threads) is timed
too, in its own block after those, with its parity figure.

    python -m nnunet_lightseg.measure.onnx_export_check [--models ...] [--threads 1] [--repeats 10]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from nnunet_lightseg import cpu_inference, registry
from nnunet_lightseg.measure import markdown_table
from nnunet_lightseg.measure.inference_steps import HIPPOCAMPUS, nnunet_default
from nnunet_lightseg.nnunet_env import DEFAULT_MODELS
from nnunet_lightseg.onnx_export import export_network, probability_difference
from nnunet_lightseg.onnx_runtimes import INPUT, OpenVinoModel, installed, session
from nnunet_lightseg.timing import timed_runs

PATCH, STEPS = tuple(HIPPOCAMPUS["patch_size"]), [(2, 2, 2)] * 3
REFERENCE = "nnUNet-default"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[REFERENCE, *DEFAULT_MODELS],
                        help=f"registered models, and {REFERENCE!r}: nnU-Net's PlainConvUNet of the plan")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), patch {PATCH}, median of {args.repeats}\n")
    openvino = installed("openvino")
    print("\n".join(markdown_table(["model", "axes", "max probability difference at the patch",
                                    "export and checks, s", "torch ms", "ONNX Runtime ms"]
                                   + (["OpenVINO ms", "OpenVINO max probability difference"] if openvino else []), [])))
    x = torch.randn(1, 1, *PATCH)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            torch.manual_seed(0)
            network = (nnunet_default(HIPPOCAMPUS) if name == REFERENCE else
                       registry.get(name).create(registry.Plan(1, 3, PATCH, STEPS))).eval()
            path, start = os.path.join(folder, f"{name}.onnx"), time.perf_counter()
            parity = export_network(network, 1, list(PATCH), path, args.threads)
            seconds = time.perf_counter() - start
            cpu_inference.enable(network)
            onnx_session = session(path, args.threads)
            with torch.inference_mode():
                times = timed_runs({"torch": lambda: network(x),
                                    "onnx": lambda: onnx_session.run(None, {INPUT: x.numpy()})}, args.repeats)
            extra = ""
            if openvino:
                with torch.inference_mode():
                    reference = network(x).numpy()
                compiled = OpenVinoModel(path, args.threads)
                output = compiled(x.numpy())
                seconds_openvino = statistics.median(timed_runs({0: lambda: compiled(x.numpy())}, args.repeats)[0])
                extra = f" {seconds_openvino * 1e3:.1f} | {probability_difference(output, reference):.1e} |"
            axes = ("dynamic" if parity["dynamic_spatial_axes"] else
                    "fixed spatial" if parity["dynamic_batch"] else "fixed, batch 1")
            print(f"| {name} | {axes} | "
                  f"{parity['max_probability_difference_at_patch']:.1e} | {seconds:.0f} | "
                  f"{statistics.median(times['torch']) * 1e3:.1f} | {statistics.median(times['onnx']) * 1e3:.1f} |"
                  + extra, flush=True)



if __name__ == "__main__":
    main()
