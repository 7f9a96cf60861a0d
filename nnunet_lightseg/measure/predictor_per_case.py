"""Seconds per case of nnU-Net's own predictor for our default models and nnU-Net's default net.

Runs `nnUNetPredictor.predict_single_npy_array` (what `nnUNetv2_predict` runs per case: nnU-Net's
preprocessing, sliding window with Gaussian weighting and mirroring, resampling back) on CPU, with
untrained weights (the time does not depend on them), cases and models interleaved. Our networks
are built by their trainers' `build_network_architecture`, as the predictor builds them, so the
inference fast path is on unless NNUNET_LIGHTSEG_FAST_INFERENCE=0. A case whose channel files do not
match dataset.json is named, with its files, before anything runs on it.

    python -m nnunet_lightseg.measure.predictor_per_case --plans $nnUNet_preprocessed/Dataset004_Hippocampus/nnUNetPlans.json \\
        --images $nnUNet_raw/Dataset004_Hippocampus/imagesTr --cases 3
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics

import torch

import nnunet_lightseg.trainers as trainers
from nnunet_lightseg.nnunet_env import DEFAULT_MODELS
from nnunet_lightseg.timing import timed_runs
from nnunet_lightseg.trainers.input_channels import check_case
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager


def dataset_json_beside(plans_path: str) -> dict:
    with open(os.path.join(os.path.dirname(plans_path), "dataset.json")) as f:
        return json.load(f)


def case_files(first_channel: str) -> tuple[str, list[str]]:
    """(case, its image files in channel order) from the path of its _0000 file."""
    case = first_channel[:-len("_0000.nii.gz")]
    return os.path.basename(case), sorted(glob.glob(f"{glob.escape(case)}_[0-9][0-9][0-9][0-9].nii.gz"))


def predictors(plans_path: str, models, configuration: str = "3d_fullres") -> dict:
    plans_manager = PlansManager(plans_path)
    dataset_json = dataset_json_beside(plans_path)
    manager = plans_manager.get_configuration(configuration)
    n_in = determine_num_input_channels(plans_manager, manager, dataset_json)
    n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    networks = {"nnU-Net default": ("nnUNetTrainer", get_network_from_plans(
        manager.network_arch_class_name, manager.network_arch_init_kwargs,
        manager.network_arch_init_kwargs_req_import, n_in, n_out, deep_supervision=False))}
    for name in models:
        trainer = getattr(trainers, f"nnUNetTrainer{name}")
        networks[name] = (trainer.__name__, trainer.build_network_architecture(plans_manager, manager, n_in, n_out,
                                                                                False))
    out = {}
    for label, (trainer_name, network) in networks.items():
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=False, device=torch.device("cpu"),
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        axes = tuple(range(len(manager.patch_size)))
        predictor.manual_initialization(network, plans_manager, manager, [network.state_dict()], dataset_json,
                                        trainer_name, axes)
        out[label] = predictor
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", required=True, help="nnUNetPlans.json (dataset.json beside it)")
    parser.add_argument("--images", required=True, help="folder of raw images (<case>_0000.nii.gz, _0001, ...)")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = predictors(args.plans, args.models)
    dataset_json = dataset_json_beside(args.plans)
    files = sorted(glob.glob(os.path.join(args.images, "*_0000.nii.gz")))[:args.cases]
    times = {label: [] for label in runs}
    load_before = os.getloadavg()[0]
    for path in files:
        case, channels = case_files(path)
        image, properties = SimpleITKIO().read_images(channels)
        check_case(case, channels, image.shape[0], dataset_json)
        once = timed_runs({label: (lambda p=predictor: p.predict_single_npy_array(image, properties, None, None, False))
                           for label, predictor in runs.items()}, repeats=1, warmup=0)
        for label, seconds in once.items():
            times[label] += seconds
    base = statistics.mean(times["nnU-Net default"])
    print(f"{len(files)} cases, torch threads {args.threads}, load average before {load_before:.1f}, "
          f"after {os.getloadavg()[0]:.1f}\n\n| model | mean s/case | min s/case | x nnU-Net default (mean) |\n"
          "|---|---|---|---|")
    for label, values in times.items():
        print(f"| {label} | {statistics.mean(values):.3f} | {min(values):.3f} | {base / statistics.mean(values):.1f} |")


if __name__ == "__main__":
    main()
