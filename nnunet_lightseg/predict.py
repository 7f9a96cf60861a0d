"""`nnunet-lightseg predict`: nnU-Net's prediction in one process, a line per case with its stages.

Two sources for the network: a trained model (`-d -c -tr -f`, loaded by nnU-Net's own
`nnUNetPredictor.initialize_from_trained_model_folder`, so our trainers' networks run through the
CPU inference engine), or `--onnx DIR [DIR ...]`, folders written by `nnunet-lightseg export` (one
fold each; several are averaged as nnU-Net averages folds), whose networks run in ONNX Runtime or
OpenVINO (`--runtime`), loaded once for all cases (`OnnxNetwork`). Every other step is nnU-Net's
own function, called in this process (no worker processes, which cost more than they save for
small networks and cases): the configuration's preprocessor (`run_case`), the predictor's sliding
window with its Gaussian weighting, mirroring and fold averaging
(`nnUNetPredictor.predict_logits_from_preprocessed_data`), and the export
(`export_prediction_from_logits`). Each case's line splits its time into load and preprocessing,
sliding window, and resampling and export. The process keeps freed memory mapped
(`allocator.keep_freed_memory`), for whatever network it runs.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from nnunet_lightseg import output_folder
from nnunet_lightseg.allocator import keep_freed_memory
from nnunet_lightseg.errors import UsageError
from nnunet_lightseg.nnunet_env import results_folder
from nnunet_lightseg.onnx_export import METADATA_FILE, MODEL_FILE
from nnunet_lightseg.onnx_runtimes import load
from nnunet_lightseg.trainers.input_channels import check_case


@dataclass(frozen=True)
class PredictConfig:
    input: str
    output: str
    onnx: tuple[str, ...] = ()  # folders `nnunet-lightseg export` wrote, a fold each; else the trained model below
    runtime: Optional[str] = None  # what runs the --onnx network: onnxruntime (the default) or openvino
    dataset: Optional[str] = None
    configuration: Optional[str] = None
    trainer: Optional[str] = None
    folds: tuple[str, ...] = ("0", "1", "2", "3", "4")
    plans: str = "nnUNetPlans"
    checkpoint: str = "checkpoint_final.pth"
    tile_step_size: float = 0.5
    mirroring: bool = True
    save_probabilities: bool = False
    threads: Optional[int] = None
    force: bool = False


class OnnxNetwork(nn.Module):
    """A module whose forward runs an exported network in its runtime (what nnU-Net's predictor calls).

    One function per exported fold (`onnx_runtimes.load`'s); the buffer `fold` picks the one that
    runs. nnU-Net's predictor loads each fold's "weights" before its sliding window
    (`load_state_dict`), so given `fold_states()` as its parameters it runs every fold in turn and
    averages their logits, as it does for a trained model's folds.
    """

    def __init__(self, runs: list[Callable[[np.ndarray], np.ndarray]]):
        super().__init__()
        self.runs = list(runs)
        self.register_buffer("fold", torch.zeros((), dtype=torch.long))

    def fold_states(self) -> list[dict]:
        return [{"fold": torch.tensor(k)} for k in range(len(self.runs))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runs[int(self.fold)](x.detach().cpu().numpy()))


def _read(folder: str, name: str) -> dict:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise UsageError(f"--onnx {folder}: no {name} there; give a folder written by `nnunet-lightseg export`.")
    with open(path) as f:
        return json.load(f)


def _same_model(export: dict, other: dict) -> bool:
    """Whether two exports are folds of one trained model (same trainer, configuration, input,
    mirroring, plans and dataset)."""
    keys = ("trainer_name", "configuration", "inference_allowed_mirroring_axes")
    first, second = export[METADATA_FILE], other[METADATA_FILE]
    return (all(first[k] == second[k] for k in keys)
            and all(first["input"][k] == second["input"][k] for k in ("channels", "patch_size"))
            and export["plans.json"] == other["plans.json"] and export["dataset.json"] == other["dataset.json"])


def _cases(folder: str, file_ending: str) -> list[tuple[str, list[str]]]:
    """(case id, its channel files) for every case in an nnU-Net input folder (CASE_XXXX<ending>)."""
    from nnunetv2.utilities.utils import create_paths_fn, get_identifiers_from_splitted_dataset_folder

    if not os.path.isdir(folder):
        raise UsageError(f"-i {folder}: not a folder; give the folder of images to predict (CASE_0000{file_ending}, ...).")
    files = sorted(os.listdir(folder))
    cases = [(case, create_paths_fn(folder, files, file_ending, case))
             for case in get_identifiers_from_splitted_dataset_folder(folder, file_ending)]
    if not cases:
        raise UsageError(f"-i {folder}: no CASE_XXXX{file_ending} images there (the model's file ending); "
                         f"name them as for nnUNetv2_predict.")
    return cases


def _predictor(config: PredictConfig):
    """nnU-Net's predictor for the ONNX export or the trained model the configuration names."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    predictor = nnUNetPredictor(tile_step_size=config.tile_step_size, use_gaussian=True,
                                use_mirroring=config.mirroring, perform_everything_on_device=False,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    if config.runtime is not None and not config.onnx:
        raise UsageError(f"--runtime {config.runtime} runs an ONNX export: give --onnx DIR too (a trained model "
                         f"runs in torch).")
    if config.onnx:
        exports = [{name: _read(folder, name) for name in (METADATA_FILE, "plans.json", "dataset.json")}
                   for folder in config.onnx]
        first = exports[0]
        metadata = first[METADATA_FILE]
        for folder, export in zip(config.onnx[1:], exports[1:]):
            if not _same_model(first, export):
                raise UsageError(f"--onnx {folder}: not a fold of the model exported in {config.onnx[0]} (trainer, "
                                 f"configuration, input, plans or dataset differ); give exports of one trained model.")
        plans_manager = PlansManager(first["plans.json"])
        mirror_axes = metadata["inference_allowed_mirroring_axes"]
        tile = (1, metadata["input"]["channels"], *metadata["input"]["patch_size"])  # what the sliding window feeds
        network = OnnxNetwork([load(os.path.join(folder, MODEL_FILE), config.runtime or "onnxruntime", config.threads,
                                    tile) for folder in config.onnx])
        predictor.manual_initialization(network, plans_manager, plans_manager.get_configuration(metadata["configuration"]),
                                        network.fold_states(), first["dataset.json"], metadata["trainer_name"],
                                        tuple(mirror_axes) if mirror_axes is not None else None)
        return predictor
    missing = [flag for flag, value in (("-d", config.dataset), ("-c", config.configuration), ("-tr", config.trainer))
               if value is None]
    if missing:
        raise UsageError(f"give --onnx DIR, or the trained model with {', '.join(missing)} (and -f FOLDS).")
    folder = os.path.join(results_folder(config.dataset), f"{config.trainer}__{config.plans}__{config.configuration}")
    absent = [fold for fold in config.folds if not os.path.isfile(os.path.join(folder, f"fold_{fold}", config.checkpoint))]
    if absent:
        raise UsageError(f"no {config.checkpoint} for fold(s) {' '.join(absent)} in {folder}: train them first, or "
                         f"give the folds that were trained with -f.")
    predictor.initialize_from_trained_model_folder(folder, tuple(f if f == "all" else int(f) for f in config.folds),
                                                   config.checkpoint)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return predictor


def predict(config: PredictConfig, say: Callable[[str], None] = print) -> list[dict]:
    """Predict every case of config.input into config.output; return one timing record per case."""
    from nnunetv2.inference.export_prediction import export_prediction_from_logits

    if not 0 < config.tile_step_size <= 1:
        raise UsageError(f"--step_size {config.tile_step_size}: give a tile step in (0, 1], e.g. nnU-Net's 0.5.")
    keep_freed_memory()  # for every network this process runs, nnU-Net's and ONNX exports included
    predictor = _predictor(config)
    plans_manager, configuration_manager = predictor.plans_manager, predictor.configuration_manager
    dataset_json = predictor.dataset_json
    cases = _cases(config.input, dataset_json["file_ending"])
    for case, files in cases:
        check_case(case, [os.path.basename(f) for f in files], len(files), dataset_json)
    output_folder.claim(config.output, config.force)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    records = []
    for number, (case, files) in enumerate(cases, start=1):
        start = time.perf_counter()
        data, _, properties = preprocessor.run_case(files, None, plans_manager, configuration_manager, dataset_json)
        preprocessed = time.perf_counter()
        logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(np.ascontiguousarray(data))).cpu()
        predicted = time.perf_counter()
        export_prediction_from_logits(logits, properties, configuration_manager, plans_manager, dataset_json,
                                      os.path.join(config.output, case), config.save_probabilities)
        done = time.perf_counter()
        record = {"case": case, "seconds": done - start, "load_and_preprocess_s": preprocessed - start,
                  "network_s": predicted - preprocessed, "resample_and_export_s": done - predicted}
        records.append(record)
        say(f"[{number}/{len(cases)}] {case}: {record['seconds']:.2f} s (load and preprocessing "
            f"{record['load_and_preprocess_s']:.2f}, sliding window {record['network_s']:.2f}, "
            f"resampling and export {record['resample_and_export_s']:.2f})")
    return records
