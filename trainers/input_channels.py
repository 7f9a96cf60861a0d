"""The input-channel check: a case with the wrong number of channels is named before the network runs.

`LightSegTrainer.build_network_architecture` installs `InputChannelCheck` on the network it builds,
as a forward pre-hook, for nnU-Net's trainer and predictor alike. The CPU fast path runs a deep
copy of the network, hooks included, so the check runs there too. Inside the stock predictor the
hook sees tensors only: its message gives the expected and received counts and the channel names
of the dataset.json nnU-Net keeps with the model. Our own tools call `check_case` first, which
names the case and its files as well. The networks themselves know nothing of nnU-Net.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import torch

from nnunet_lightseg.errors import LightSegError
from nnunet_lightseg.nnunet_env import PREPROCESSED, RESULTS

FIX = "give every case one image file per channel (<case>_0000, <case>_0001, ...), as in the training data"


class InputChannelsError(LightSegError):
    """A case whose number of input channels is not the model's."""


def channel_names(dataset_json: dict) -> list[str]:
    """The input channels of a dataset.json, in order (`channel_names`, or `modality` in older files)."""
    names = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    return [str(names[key]) for key in sorted(names, key=int)]


def _expects(count: int, names: list[str]) -> str:
    named = f" ({', '.join(names)}, from dataset.json)" if len(names) == count else ""
    return f"the model expects {count} input channels{named}"


def check_case(case: str, files: list[str], received: int, dataset_json: dict) -> None:
    """Raise InputChannelsError, naming the case and its files, unless it has a channel per dataset.json entry."""
    names = channel_names(dataset_json)
    if received != len(names):
        raise InputChannelsError(f"{_expects(len(names), names)}, but case {case} has {received} "
                                 f"({', '.join(files)}): {FIX}.")


def model_channel_names(dataset: str, trainer: str, plans: str) -> list[str]:
    """Channel names from the dataset.json beside the trainer's results (nnUNet_results), else beside the
    preprocessed data; [] when neither is there. Read only for an error message."""
    candidates = sorted(glob.glob(os.path.join(os.environ.get(RESULTS, ""), dataset, f"{trainer}__{plans}__*",
                                               "dataset.json")))
    candidates.append(os.path.join(os.environ.get(PREPROCESSED, ""), dataset, "dataset.json"))
    for path in candidates:
        if os.path.isfile(path):
            with open(path) as f:
                return channel_names(json.load(f))
    return []


@dataclass
class InputChannelCheck:
    """Forward pre-hook: InputChannelsError when the input (N, C, ...) has not `expected` channels.
    `dataset`, `trainer` and `plans` locate the model's dataset.json for the channel names."""

    expected: int
    dataset: str
    trainer: str
    plans: str

    def __call__(self, module, args) -> None:
        x = args[0] if args else None
        if torch.is_tensor(x) and x.ndim > 2 and x.shape[1] != self.expected:
            names = model_channel_names(self.dataset, self.trainer, self.plans)
            raise InputChannelsError(f"{_expects(self.expected, names)}, but the input has {x.shape[1]}: {FIX}.")
