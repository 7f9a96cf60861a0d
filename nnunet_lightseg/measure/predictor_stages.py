"""Where a case's prediction time goes, per model and setting: nnU-Net's stock predictor against
`nnunet-lightseg predict` (issue 14).

For nnU-Net's default network and each default paper trainer, a model folder with untrained
weights is written under --work as `nnUNetv2_train` leaves one (plans.json, dataset.json,
fold_<k>/checkpoint_final.pth, each fold seeded differently: the time does not depend on the
weights). The first --cases raw cases are then predicted in two settings,

- defaults: what `nnUNetv2_predict` does without options: folds 0-4, mirroring, tile step 0.5;
- fast: fold 0, no mirroring, tile step 0.75;

each two ways, models and ways in turn, one at a time:

- stock: `nnUNetPredictor.predict_from_files`, what `nnUNetv2_predict` runs, with its default
  worker processes (3 preprocessing, 3 export), in a fresh process (imports not timed): seconds per
  case = wall time / cases, model loading and worker start-up included, as a user waits for them;
- ours: `predict.predict` (`nnunet-lightseg predict`, one process), with its stages per case: load
  and preprocessing, sliding window (network, Gaussian weighting, mirroring, fold average),
  resampling and export; model loading is timed apart and spread over the cases in `seconds`;
- with --onnx: each fold of the setting exported by `nnunet-lightseg export` (not timed) and
  predicted by `predict --onnx` (the folds averaged), the same pipeline around the exported
  networks, once in ONNX Runtime and, where it is installed, once in OpenVINO (`--runtime openvino`).

Torch uses --threads in both ways, unless nnUNet_def_n_proc is set lower: nnU-Net's predictor caps
torch's threads at it while the sliding window runs (so `nnUNet_def_n_proc=1`, which makes training
validation faster on 2 cores, makes prediction single-threaded); the report records it. Writes --out
(JSON) and prints a markdown table.

    python -m nnunet_lightseg.measure.predictor_stages --plans $nnUNet_preprocessed/Dataset004_Hippocampus/nnUNetPlans.json \\
        --images $nnUNet_raw/Dataset004_Hippocampus/imagesTr --cases 5 --work /tmp/stages --out stages.json
"""
from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import queue
import shutil
import statistics
import time
from functools import lru_cache

import torch

from nnunet_lightseg.measure import markdown_table
from nnunet_lightseg.nnunet_env import DEFAULT_TRAINERS, RESULTS
from nnunet_lightseg.onnx_runtimes import RUNTIMES, installed

SETTINGS = {"defaults": {"folds": ("0", "1", "2", "3", "4"), "mirroring": True, "tile_step_size": 0.5},
            "fast": {"folds": ("0",), "mirroring": False, "tile_step_size": 0.75}}
REFERENCE = "nnUNetTrainer"
STOCK_WORKERS = 3  # nnUNetv2_predict's -npp and -nps defaults
STAGES = ("load_and_preprocess_s", "network_s", "resample_and_export_s")


def write_model_folder(results: str, plans_path: str, trainer_name: str, configuration: str, folds: int) -> str:
    """<results>/<dataset>/<trainer>__<plans>__<configuration> with `folds` seeded untrained checkpoints."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.inference.predict_from_raw_data import recursive_find_trainer_class_by_name

    plans_manager = PlansManager(plans_path)
    dataset_json_path = os.path.join(os.path.dirname(plans_path), "dataset.json")
    with open(dataset_json_path) as f:
        dataset_json = json.load(f)
    manager = plans_manager.get_configuration(configuration)
    folder = os.path.join(results, plans_manager.dataset_name,
                          f"{trainer_name}__{plans_manager.plans_name}__{configuration}")
    os.makedirs(folder, exist_ok=True)
    shutil.copy(plans_path, os.path.join(folder, "plans.json"))
    shutil.copy(dataset_json_path, os.path.join(folder, "dataset.json"))
    trainer = recursive_find_trainer_class_by_name(trainer_name)
    n_in = determine_num_input_channels(plans_manager, manager, dataset_json)
    n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    for fold in range(folds):
        torch.manual_seed(fold)
        network = trainer.build_network_architecture(plans_manager, manager, n_in, n_out, False)
        os.makedirs(os.path.join(folder, f"fold_{fold}"), exist_ok=True)
        torch.save({"network_weights": network.state_dict(), "trainer_name": trainer_name,
                    "init_args": {"configuration": configuration},
                    "inference_allowed_mirroring_axes": tuple(range(len(manager.patch_size)))},
                   os.path.join(folder, f"fold_{fold}", "checkpoint_final.pth"))
    return folder


def stock_seconds_per_case(model_folder: str, setting: dict, inputs: str, output: str, cases: int,
                           threads: int) -> float:
    """Wall seconds per case of nnUNetPredictor.predict_from_files, model loading included, timed in
    a fresh process as `nnUNetv2_predict` runs: this one has set malloc's thresholds for good
    (`allocator`) once our path has run, and nnU-Net's own network does not set them."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_stock_in_this_process,
                              args=(results, model_folder, setting, inputs, output, cases, threads))
    process.start()
    while True:
        try:
            outcome = results.get(timeout=5)
            break
        except queue.Empty:
            if not process.is_alive():
                raise RuntimeError(f"the stock prediction's process ended with exit code {process.exitcode} "
                                   f"and no result ({model_folder})")
    process.join()
    if isinstance(outcome, str):
        raise RuntimeError(f"the stock prediction failed ({model_folder}): {outcome}")
    return outcome


def _stock_in_this_process(results, model_folder: str, setting: dict, inputs: str, output: str, cases: int,
                           threads: int) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    try:
        torch.set_num_threads(threads)
        start = time.perf_counter()
        predictor = nnUNetPredictor(tile_step_size=setting["tile_step_size"], use_gaussian=True,
                                    use_mirroring=setting["mirroring"], perform_everything_on_device=False,
                                    device=torch.device("cpu"), verbose=False, verbose_preprocessing=False,
                                    allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(model_folder, tuple(int(f) for f in setting["folds"]))
        predictor.predict_from_files(inputs, output, save_probabilities=False, overwrite=True,
                                     num_processes_preprocessing=STOCK_WORKERS,
                                     num_processes_segmentation_export=STOCK_WORKERS)
        results.put((time.perf_counter() - start) / cases)
    except Exception as error:  # the parent raises it; a traceback here is the child's
        results.put(f"{type(error).__name__}: {error}")
        raise


def ours(config) -> dict:
    """Mean seconds per case of `predict.predict` with `config` and of each of its stages; model
    loading spread over the cases (and apart in load_model_s)."""
    from nnunet_lightseg.predict import predict

    start = time.perf_counter()
    records = predict(config, say=lambda _: None)
    total = time.perf_counter() - start
    stages = {stage: statistics.mean(r[stage] for r in records) for stage in STAGES}
    return {"seconds": total / len(records), "load_model_s": total - sum(r["seconds"] for r in records), **stages}


@lru_cache(maxsize=None)
def exported(dataset: str, trainer_name: str, configuration: str, fold: str, work: str) -> str:
    """The folder `nnunet-lightseg export` writes for this fold (not timed; once per run)."""
    from nnunet_lightseg.onnx_export import ExportConfig, export_fold

    folder = os.path.join(work, "onnx", trainer_name, f"fold_{fold}")
    export_fold(ExportConfig(dataset, configuration, trainer_name, fold, folder, force=True))
    return folder


def input_folder(images: str, cases: int, work: str) -> tuple[str, int]:
    """A folder of links to the channel files of the first `cases` cases of `images`, and their number."""
    from nnunet_lightseg.measure.predictor_per_case import case_files

    folder = os.path.join(work, "input")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    first = sorted(glob.glob(os.path.join(images, "*_0000.nii.gz")))[:cases]
    if not first:
        raise SystemExit(f"--images {images}: no <case>_0000.nii.gz there; give a folder of raw images.")
    for path in first:
        for channel in case_files(path)[1]:
            os.symlink(os.path.abspath(channel), os.path.join(folder, os.path.basename(channel)))
    return folder, len(first)


def markdown(rows: list[dict]) -> str:
    """The table of docs/performance.md: per case, and two speed-ups over nnU-Net's default network:
    what a user sees (nnU-Net's default through the stock predictor against the model through
    `nnunet-lightseg predict`) and the network's share (both through `nnunet-lightseg predict`)."""
    stock = {r["setting"]: r["stock_s"] for r in rows if r["trainer"] == REFERENCE}
    same = {r["setting"]: r["seconds"] for r in rows if r["trainer"] == REFERENCE}

    def ratio(reference: dict, row: dict) -> str:
        return f"{reference[row['setting']] / row['seconds']:.2f}" if row["setting"] in reference else "-"

    return "\n".join(markdown_table(
        ["setting", "trainer", "stock s/case", "ours s/case", "x vs nnU-Net stock", "x vs nnU-Net ours", "load model s",
         "load + preprocess", "sliding window", "resample + export", "ONNX Runtime s/case", "its sliding window",
         "OpenVINO s/case", "its sliding window"],
        [[r["setting"], r["trainer"], f"{r['stock_s']:.2f}", f"{r['seconds']:.2f}", ratio(stock, r), ratio(same, r),
          f"{r['load_model_s']:.2f}", f"{r['load_and_preprocess_s']:.3f}", f"{r['network_s']:.2f}",
          f"{r['resample_and_export_s']:.3f}", *(f"{r[f'{runtime}_{k}']:.2f}" if f"{runtime}_{k}" in r else "-"
                                                     for runtime in RUNTIMES for k in ("s", "network_s"))]
         for r in rows]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", required=True, help="nnUNetPlans.json (dataset.json beside it)")
    parser.add_argument("--images", required=True, help="folder of raw images (<case>_0000.nii.gz, ...)")
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--trainers", nargs="+", default=[REFERENCE, *DEFAULT_TRAINERS])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", required=True, help="a scratch folder (model folders, inputs, outputs)")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--onnx", action="store_true",
                        help="also predict through ONNX Runtime and, where installed, OpenVINO (`nnunet-lightseg "
                             "export` of each fold of the setting, then `predict --onnx`)")
    args = parser.parse_args(argv)
    from nnunet_lightseg.predict import PredictConfig

    torch.set_num_threads(args.threads)
    os.environ[RESULTS] = results = os.path.join(args.work, "results")
    inputs, cases = input_folder(args.images, args.cases, args.work)
    with open(args.plans) as f:
        dataset = json.load(f)["dataset_name"]
    rows, load_before = [], os.getloadavg()[0]
    for trainer_name in args.trainers:
        folder = write_model_folder(results, args.plans, trainer_name, args.configuration, 5)
        for name in args.settings:
            setting = SETTINGS[name]
            out = os.path.join(args.work, "out", trainer_name, name)
            stock = stock_seconds_per_case(folder, setting, inputs, os.path.join(out, "stock"), cases, args.threads)
            common = dict(input=inputs, threads=args.threads, force=True, mirroring=setting["mirroring"],
                          tile_step_size=setting["tile_step_size"])
            row = {"setting": name, "trainer": trainer_name, "stock_s": stock,
                   **ours(PredictConfig(output=os.path.join(out, "ours"), dataset=dataset,
                                        configuration=args.configuration, trainer=trainer_name,
                                        folds=setting["folds"], **common))}
            if args.onnx:
                exports = tuple(exported(dataset, trainer_name, args.configuration, fold, args.work)
                                for fold in setting["folds"])
                for runtime in RUNTIMES:
                    if installed(runtime):
                        result = ours(PredictConfig(output=os.path.join(out, runtime), onnx=exports, runtime=runtime,
                                                    **common))
                        row.update({f"{runtime}_s": result["seconds"], f"{runtime}_network_s": result["network_s"]})
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    report = {"plans": os.path.abspath(args.plans), "cases": cases, "threads": args.threads,
              "nnUNet_def_n_proc": os.environ.get("nnUNet_def_n_proc"),
              "stock_workers": STOCK_WORKERS, "settings": {n: SETTINGS[n] for n in args.settings},
              "load_average_before": load_before, "load_average_after": os.getloadavg()[0], "rows": rows}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\n{cases} cases, {args.threads} torch threads, load average {load_before:.1f} before, "
          f"{report['load_average_after']:.1f} after\n\n{markdown(rows)}")


if __name__ == "__main__":
    main()
