"""`nnunet-lightseg export`: one trained fold as an ONNX network, with what nnU-Net needs around it.

The fold is loaded the way `nnUNetv2_predict` loads it (`nnUNetPredictor.initialize_from_trained_model_folder`:
the checkpoint's trainer rebuilds the network without deep supervision and loads the weights),
then traced on its plain graph (not the CPU inference engine, whose fused oneDNN ops ONNX does
not have). The axes are dynamic only where the network allows it: the export is checked with ONNX
Runtime at the plan's patch size and on a batch of two at a second size. Where that disagrees with
torch (a size baked into the trace), it is exported again with the patch size fixed, and where a
batch of two still disagrees (VeloxSeg's window attention bakes the batch in too), with the batch
fixed to 1 as well: nnU-Net's sliding window feeds one patch at a time.

Beside `model.onnx`: the model folder's `plans.json` and `dataset.json`, and `export.json` (the
configuration, fold, checkpoint, the checkpoint's trainer name and mirroring axes, the input
size, and the parity figures of the check). `nnunet-lightseg predict --onnx`
rebuilds nnU-Net's predictor from them.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from nnunet_lightseg import output_folder
from nnunet_lightseg.cpu_inference import plain_path
from nnunet_lightseg.errors import ExportError
from nnunet_lightseg.nnunet_env import results_folder
from nnunet_lightseg.onnx_runtimes import INPUT, session, version

MODEL_FILE, METADATA_FILE = "model.onnx", "export.json"
OPSET = 17
# The parity check: max |softmax(ONNX) - softmax(torch)| over the classes and voxels, i.e. how far
# the export moves a probability that nnU-Net exports or takes the argmax of. Not the logits
# relative to the largest: that figure grows with the patch in ONNX Runtime and OpenVINO alike
# (LightMedSeg, untrained: 9e-7 at 40x56x40, 1.0e-4 at 128^3, spread evenly over the volume as a
# whole-patch statistic summed less accurately than torch's would be; torch is 3.6e-7 from float64
# there), while its probabilities move by 8e-5 (docs/deployment.md).
PARITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportConfig:
    dataset: str
    configuration: str
    trainer: str
    fold: str
    output: str
    plans: str = "nnUNetPlans"
    checkpoint: str = "checkpoint_final.pth"
    force: bool = False


def _model_folder(config: ExportConfig) -> str:
    folder = os.path.join(results_folder(config.dataset), f"{config.trainer}__{config.plans}__{config.configuration}")
    fold = f"fold_{config.fold}"
    if not os.path.isfile(os.path.join(folder, fold, config.checkpoint)):
        raise ExportError(f"no {config.checkpoint} in {os.path.join(folder, fold)}: train that fold first "
                          f"(nnUNetv2_train {config.dataset} {config.configuration} {config.fold} -tr {config.trainer}), "
                          f"or pick the trainer, plans, configuration and fold it was trained with.")
    return folder


def _export(network: torch.nn.Module, x: torch.Tensor, path: str, spatial_dynamic: bool,
            batch_dynamic: bool = True) -> None:
    axes = {0: "batch"} if batch_dynamic else {}
    if spatial_dynamic:
        axes.update({i: f"axis{i - 2}" for i in range(2, x.ndim)})
    with plain_path(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(network, (x,), path, dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=["logits"], dynamic_axes={INPUT: axes, "logits": axes})


def probability_difference(logits: np.ndarray, reference: np.ndarray) -> float:
    """max |softmax(logits) - softmax(reference)| over the classes (axis 1) and voxels."""
    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return float(np.abs(softmax(logits.astype(np.float64)) - softmax(reference.astype(np.float64))).max())


def _difference(network: torch.nn.Module, onnx_session, x: torch.Tensor) -> float:
    """The parity figure (PARITY_TOLERANCE) of ONNX Runtime against torch for input x (inf if either
    fails: a size the network itself cannot take, e.g. one its poolings do not divide, is a size the
    export need not take either)."""
    try:
        with plain_path(), torch.no_grad():
            expected = network(x).numpy()
    except RuntimeError:
        return float("inf")
    try:
        got = onnx_session.run(None, {INPUT: x.numpy()})[0]
    except Exception:  # noqa: BLE001 - ONNX Runtime raises its own types for a size the trace cannot take
        return float("inf")
    if got.shape != expected.shape:
        return float("inf")
    return probability_difference(got, expected)


def export_network(network: torch.nn.Module, channels: int, patch: list[int], path: str,
                   threads: int | None = None) -> dict:
    """Export `network` (eval mode) to `path` with dynamic batch and spatial axes where ONNX Runtime
    agrees with torch on other sizes; return the parity figures (module docstring). The batch-2
    figure is None when the batch is fixed to 1."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, *patch, generator=generator)
    other = torch.randn(2, channels, *[s + 8 for s in patch], generator=generator)  # batch 2, another size
    batch_2 = torch.cat([x, x.flip(1)])
    _export(network, x, path, spatial_dynamic=True)
    checked = session(path, threads)
    spatial_dynamic = batch_dynamic = _difference(network, checked, other) <= PARITY_TOLERANCE
    if not spatial_dynamic:
        _export(network, x, path, spatial_dynamic=False)
        checked = session(path, threads)
        batch_dynamic = _difference(network, checked, batch_2) <= PARITY_TOLERANCE
        if not batch_dynamic:
            _export(network, x, path, spatial_dynamic=False, batch_dynamic=False)
            checked = session(path, threads)
    return {"dynamic_spatial_axes": spatial_dynamic, "dynamic_batch": batch_dynamic,
            "max_probability_difference_at_patch": _difference(network, checked, x),
            "max_probability_difference_batch_2": _difference(network, checked, batch_2) if batch_dynamic else None}


def export_fold(config: ExportConfig) -> dict:
    """Write model.onnx, plans.json, dataset.json and export.json into config.output; return the metadata."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    runtime_version = version("onnxruntime")
    folder = _model_folder(config)
    output_folder.claim(config.output, config.force)
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(folder, (config.fold if config.fold == "all" else int(config.fold),),
                                                   config.checkpoint)
    patch = [int(s) for s in predictor.configuration_manager.patch_size]
    channels = determine_num_input_channels(predictor.plans_manager, predictor.configuration_manager,
                                            predictor.dataset_json)
    parity = export_network(predictor.network.eval(), channels, patch, os.path.join(config.output, MODEL_FILE))
    worst = max(parity["max_probability_difference_at_patch"], parity["max_probability_difference_batch_2"] or 0.0)
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"ONNX Runtime's class probabilities differ from torch's by up to {worst:.2g} (limit "
                          f"{PARITY_TOLERANCE:g}): this network does not export faithfully; predict with "
                          f"nnUNetv2_predict instead.")
    for name in ("plans.json", "dataset.json"):
        shutil.copyfile(os.path.join(folder, name), os.path.join(config.output, name))
    axes = predictor.allowed_mirroring_axes
    metadata = {
        "trainer_name": predictor.trainer_name, "configuration": config.configuration, "fold": config.fold,
        "checkpoint": config.checkpoint, "model_folder": os.path.abspath(folder),
        "inference_allowed_mirroring_axes": list(axes) if axes is not None else None,
        "input": {"channels": channels, "patch_size": patch, "dynamic_batch": parity["dynamic_batch"],
                  "dynamic_spatial_axes": parity["dynamic_spatial_axes"]},
        "parity": {"max_probability_difference_at_patch": parity["max_probability_difference_at_patch"],
                   "max_probability_difference_batch_2": parity["max_probability_difference_batch_2"],
                   "tolerance": PARITY_TOLERANCE},
        "opset": OPSET, "torch": torch.__version__, "onnxruntime": runtime_version,
    }
    with open(os.path.join(config.output, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=2)
    return metadata
