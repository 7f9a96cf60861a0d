"""`nnunet-lightseg predict --onnx DIR -i IN -o OUT`: nnU-Net's prediction around an ONNX Runtime session.

Every step is nnU-Net's own function, called in this process (no worker processes, which cost
more than they save for small networks and cases): the configuration's preprocessor
(`run_case`), the predictor's sliding window with its Gaussian weighting and mirroring
(`nnUNetPredictor.predict_logits_from_preprocessed_data`), and the export
(`export_prediction_from_logits`). Only the network is replaced: `OnnxNetwork` hands each patch to
an ONNX Runtime session, loaded once for all cases. One line per case says where its time went.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from nnunet_lightseg import output_folder
from nnunet_lightseg.errors import UsageError
from nnunet_lightseg.onnx_export import METADATA_FILE, MODEL_FILE, session
from nnunet_lightseg.trainers.input_channels import check_case


@dataclass(frozen=True)
class OnnxPredictConfig:
    model: str  # the folder `nnunet-lightseg export` wrote
    input: str
    output: str
    tile_step_size: float = 0.5
    mirroring: bool = True
    save_probabilities: bool = False
    threads: int | None = None
    force: bool = False


class OnnxNetwork(nn.Module):
    """A parameter-free module whose forward runs an ONNX Runtime session (what nnU-Net's predictor calls)."""

    def __init__(self, onnx_session):
        super().__init__()
        self.session = onnx_session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"image": x.detach().cpu().numpy()})[0])


def _read(folder: str, name: str) -> dict:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise UsageError(f"--onnx {folder}: no {name} there; give a folder written by `nnunet-lightseg export`.")
    with open(path) as f:
        return json.load(f)


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


def predict(config: OnnxPredictConfig, say: Callable[[str], None] = print) -> list[dict]:
    """Predict every case of config.input into config.output; return one timing record per case."""
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    if not 0 < config.tile_step_size <= 1:
        raise UsageError(f"--step_size {config.tile_step_size}: give a tile step in (0, 1], e.g. nnU-Net's 0.5.")
    metadata = _read(config.model, METADATA_FILE)
    plans, dataset_json = _read(config.model, "plans.json"), _read(config.model, "dataset.json")
    cases = _cases(config.input, dataset_json["file_ending"])
    for case, files in cases:
        check_case(case, [os.path.basename(f) for f in files], len(files), dataset_json)
    output_folder.claim(config.output, config.force)

    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(metadata["configuration"])
    mirror_axes = metadata["inference_allowed_mirroring_axes"]
    predictor = nnUNetPredictor(tile_step_size=config.tile_step_size, use_gaussian=True,
                                use_mirroring=config.mirroring, perform_everything_on_device=False,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.manual_initialization(OnnxNetwork(session(os.path.join(config.model, MODEL_FILE), config.threads)),
                                    plans_manager, configuration_manager, [{}], dataset_json,
                                    metadata["trainer_name"], tuple(mirror_axes) if mirror_axes is not None else None)
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
