"""A dense conv with few output channels on oneDNN, as it is and with its taps split (cpu_inference._tap_split).

For each conv in CONVS: the best of --rounds calls of oneDNN's conv with the whole kernel and with
its last axis' taps split (`_tap_split`, then `_sum_taps`), on a channels-last input, in
milliseconds, and the form the engine's `FastConv` picks for it (`_splits_taps`: "split" or "onednn").

    python -m nnunet_lightseg.measure.narrow_convs --threads 2
"""
from __future__ import annotations

import torch

from nnunet_lightseg.cpu_inference import ONEDNN_OUTPUT_BLOCK, FastConv, _sum_taps, _tap_split
from nnunet_lightseg.measure import kernel_timing_arguments, markdown_table
from nnunet_lightseg.memory_layout import to_channels_last
from nnunet_lightseg.profiling import machine_description
from nnunet_lightseg.timing import timed_runs

# (where, in, out, kernel, size): the default networks' convs with fewer output channels than a
# block, at their Hippocampus sizes, and the reference cases of `_splits_taps`'s rule
CONVS = (("LightMedSeg decoder 4, ghost primary", 16, 4, 3, (40, 56, 40)),
         ("LightMedSeg encoder 1, ghost primary", 8, 4, 3, (20, 28, 20)),
         ("UltraLightUNet spatial attention", 2, 1, 7, (20, 28, 20)),
         ("UltraLightUNet spatial attention, coarsest", 2, 1, 7, (5, 7, 5)),
         ("LightMedSeg decoder 3, ghost primary", 32, 8, 3, (20, 28, 20)),
         ("DALight-3D encoder 1", 24, 24, 3, (40, 56, 40)),
         ("16 input channels, two blocks", 16, 8, 3, (20, 28, 20)),
         ("8 input channels, two blocks", 8, 8, 3, (20, 28, 20)),
         ("4 input channels", 4, 4, 3, (40, 56, 40)),
         ("2 input channels", 2, 4, 3, (40, 56, 40)),
         ("a full output block", 16, 16, 3, (40, 56, 40)))


def forms(in_channels: int, out_channels: int, kernel: int, size) -> tuple[dict, str]:
    """The two forms as calls, and the engine's pick."""
    conv = torch.nn.Conv3d(in_channels, out_channels, kernel, padding=kernel // 2)
    x = to_channels_last(torch.randn(1, in_channels, *size), torch.channels_last_3d)
    weight = conv.weight.detach().contiguous(memory_format=torch.channels_last_3d)
    padding = [kernel // 2] * 3
    split, split_bias = _tap_split(conv.weight.detach(), conv.bias.detach())
    split = split.contiguous(memory_format=torch.channels_last_3d)

    def split_form():
        partial = torch.ops.mkldnn._convolution_pointwise(x, split, split_bias, padding[:2] + [0], [1, 1, 1],
                                                          [1, 1, 1], 1, "none", [], "")
        return _sum_taps(partial, out_channels, kernel)
    return {"whole kernel": lambda: torch.ops.mkldnn._convolution_pointwise(
                x, weight, conv.bias.detach(), padding, [1, 1, 1], [1, 1, 1], 1, "none", [], ""),
            "split": split_form}, FastConv(conv).kind


def main(argv=None) -> None:
    args = kernel_timing_arguments(__doc__, argv)
    rows = []
    with torch.inference_mode():
        for where, in_channels, out_channels, kernel, size in CONVS:
            calls, kind = forms(in_channels, out_channels, kernel, size)
            times = timed_runs(calls, repeats=args.rounds, warmup=3)
            whole, split = (min(times[k]) * 1e3 for k in ("whole kernel", "split"))
            rows.append([where, f"{in_channels} -> {out_channels}, {kernel}^3", "x".join(map(str, size)), kind,
                         f"{whole:.3f}", f"{split:.3f}", f"{whole / split:.2f}"])
    print(f"machine: {machine_description()}, torch threads {args.threads}, oneDNN output block "
          f"{ONEDNN_OUTPUT_BLOCK}, best of {args.rounds} calls, channels-last input\n")
    print("\n".join(markdown_table(["conv", "channels, kernel", "size", "engine's form", "whole kernel ms",
                                    "split ms", "split's speed-up"], rows)))


if __name__ == "__main__":
    main()
