"""A dense conv with few output channels on oneDNN, as it is and with its taps split (cpu_inference._tap_split).

For each conv of the default networks whose output channels fill oneDNN's output block poorly (at
its Hippocampus size), and one that fills it: the best of --rounds calls of oneDNN's conv with the
whole kernel and of the engine's `FastConv` (which splits the taps where `_splits_taps` says so), on
a channels-last input, in milliseconds.

    python -m nnunet_lightseg.measure.narrow_convs --threads 2
"""
from __future__ import annotations

import argparse

import torch

from nnunet_lightseg.cpu_inference import ONEDNN_OUTPUT_BLOCK, FastConv
from nnunet_lightseg.measure import markdown_table
from nnunet_lightseg.profiling import machine_description
from nnunet_lightseg.timing import timed_runs

# (where, in, out, kernel, size)
CONVS = (("LightMedSeg decoder 4, ghost primary", 16, 4, 3, (40, 56, 40)),
         ("LightMedSeg decoder 3, ghost primary", 32, 8, 3, (20, 28, 20)),
         ("LightMedSeg encoder 1, ghost primary", 8, 4, 3, (20, 28, 20)),
         ("UltraLightUNet spatial attention", 2, 1, 7, (20, 28, 20)),
         ("a full output block, for reference", 16, 16, 3, (40, 56, 40)))


def forms(in_channels: int, out_channels: int, kernel: int, size) -> dict:
    conv = torch.nn.Conv3d(in_channels, out_channels, kernel, padding=kernel // 2)
    fast = FastConv(conv)
    x = torch.randn(1, in_channels, *size).contiguous(memory_format=torch.channels_last_3d)
    weight = conv.weight.detach().contiguous(memory_format=torch.channels_last_3d)
    fast.weight = fast.weight.contiguous(memory_format=torch.channels_last_3d)
    padding = [kernel // 2] * 3
    return {"whole kernel": lambda: torch.ops.mkldnn._convolution_pointwise(
                x, weight, conv.bias.detach(), padding, [1, 1, 1], [1, 1, 1], 1, "none", [], ""),
            "engine": lambda: fast(x), "kind": fast.kind}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with torch.inference_mode():
        for where, in_channels, out_channels, kernel, size in CONVS:
            calls = forms(in_channels, out_channels, kernel, size)
            kind = calls.pop("kind")
            times = timed_runs(calls, repeats=args.rounds, warmup=3)
            whole, engine = (min(times[k]) * 1e3 for k in ("whole kernel", "engine"))
            rows.append([where, f"{in_channels} -> {out_channels}, {kernel}^3", "x".join(map(str, size)), kind,
                         f"{whole:.2f}", f"{engine:.2f}", f"{whole / engine:.2f}"])
    print(f"machine: {machine_description()}, torch threads {args.threads}, oneDNN output block "
          f"{ONEDNN_OUTPUT_BLOCK}, best of {args.rounds} calls, channels-last input\n")
    print("\n".join(markdown_table(["conv", "channels, kernel", "size", "engine's form", "whole kernel ms",
                                    "engine ms", "speed-up"], rows)))


if __name__ == "__main__":
    main()
