"""`nnunet-lightseg profile -d D -c C`: every trainer measured at its plan's patch size, in one run.

Per entry (trainer on its plans), each in a fresh Python process so that peak memory and timings
do not carry over from one network to the next:
- params, and GMAC of one forward pass on one patch (`profiling.count_gmac`);
- inference latency per patch: median of timed forward passes, eval mode, `torch.inference_mode`
  (CUDA: autocast float16 as nnU-Net predicts, with `torch.cuda.synchronize` around each pass);
- training-step time: forward + backward + SGD step (nnU-Net's optimiser) at the plan's batch
  size on random data, with the deep supervision the trainer trains with; the loss is
  cross-entropy on every output, a stand-in for nnU-Net's Dice + CE;
- peak memory: CUDA allocator peak (`torch.cuda.max_memory_allocated`) on a GPU, the process's
  peak resident set size (`getrusage` ru_maxrss) on a CPU, both for inference and for training;
- optionally (`--predictor`) seconds per case end to end with nnU-Net's `nnUNetPredictor`
  (`predict_single_npy_array`: preprocessing, sliding window, export) on a random case of the
  plan's median shape, with the tile step, mirroring and tile count recorded;
- achieved GMAC/s (GMAC / latency), and against nnU-Net's default (`nnUNetTrainer` on
  nnUNetPlans, added to the run if not asked for): its latency divided by ours (the speed-up)
  next to its GMAC divided by ours (the MAC ratio).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from nnunet_lightseg import output_folder, profiling, registry
from nnunet_lightseg.baselines import REFERENCE, Entry
from nnunet_lightseg.errors import LightSegError, OutputFolderError, ProfileError, UsageError
from nnunet_lightseg.nnunet_env import DEFAULT_TRAINERS, PREPROCESSED, dataset_name, results_folder
from nnunet_lightseg.timing import median_seconds
from nnunet_lightseg.trainers.training_layout import apply_training_memory_format

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ProfileConfig:
    """What `profile` measures: entries on one dataset's plan, and how."""

    dataset: str
    configuration: str
    entries: tuple[Entry, ...] = tuple(Entry(trainer) for trainer in DEFAULT_TRAINERS)
    device: str = "auto"  # auto: cuda when torch sees a GPU
    threads: int | None = None  # CPU threads (default: torch's)
    repeats: int = 5
    predictor: bool = False  # also nnUNetPredictor end to end on a random case
    tile_step_size: float = 0.5
    mirroring: bool = True

    def __post_init__(self):
        if self.device not in DEVICES:
            raise UsageError(f"device {self.device!r}: use one of {', '.join(DEVICES)}.")
        if self.repeats < 1 or (self.threads is not None and self.threads < 1):
            raise UsageError("--repeats and --threads must be at least 1.")
        if not 0 < self.tile_step_size <= 1:
            raise UsageError(f"--tile-step {self.tile_step_size} must be in (0, 1], e.g. nnU-Net's 0.5.")


def load_plan(dataset: str, plans: str, configuration: str):
    """(PlansManager, ConfigurationManager, dataset_json) from nnUNet_preprocessed."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    nnUNet_preprocessed = os.environ.get(PREPROCESSED)  # read now: the benchmark sets it for its children
    if not nnUNet_preprocessed:
        raise ProfileError(f"{PREPROCESSED} is not set: export it as for nnUNetv2_train.")
    folder = os.path.join(nnUNet_preprocessed, dataset_name(dataset))
    plans_file = os.path.join(folder, f"{plans}.json")
    if not os.path.isfile(plans_file):
        raise ProfileError(f"{plans_file} does not exist: plan the dataset first, e.g. nnUNetv2_plan_and_preprocess "
                           f"-d {dataset} -c {configuration}" + ("" if plans == "nnUNetPlans" else
                                                                 f" -pl <the planner that writes {plans}>"))
    manager = PlansManager(plans_file)
    if configuration not in manager.available_configurations:
        raise ProfileError(f"{plans} of {dataset} has no configuration {configuration!r}; it has "
                           f"{', '.join(manager.available_configurations)}.")
    with open(os.path.join(folder, "dataset.json")) as f:
        dataset_json = json.load(f)
    return manager, manager.get_configuration(configuration), dataset_json


def find_trainer(name: str) -> type:
    """The trainer class: ours (short schedules included) first, then nnU-Net's own search."""
    from nnunet_lightseg import trainers

    try:
        return getattr(trainers, name)
    except AttributeError:
        pass
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        return recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        raise ProfileError(f"trainer {name!r} not found by nnU-Net; `nnunet-lightseg list` shows ours.") from None


def build_network(trainer_class: type, plans_manager, configuration_manager, dataset_json,
                  deep_supervision: bool) -> tuple[nn.Module, int]:
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    in_channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    heads = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = trainer_class.build_network_architecture(plans_manager, configuration_manager, in_channels, heads,
                                                       enable_deep_supervision=deep_supervision)
    return network, in_channels


def trains_with_deep_supervision(trainer_class: type) -> bool:
    """nnU-Net trains with deep supervision unless the trainer's network has none (the MONAI baselines)
    or its recipe turns it off (`_Paper` recipes)."""
    model = getattr(trainer_class, "model_name", "")
    if model and not registry.get(model).deep_supervision:
        return False
    return bool(getattr(trainer_class, "paper_deep_supervision", True))


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda")


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20


def inference_seconds(network: nn.Module, shape, device: torch.device, repeats: int, warmup: int) -> float:
    network.eval()
    x = torch.randn(tuple(shape), device=device)

    def step():
        with torch.inference_mode(), _autocast(device):
            network(x)
    return median_seconds(step, repeats, warmup, device)


def training_step_seconds(network: nn.Module, shape, num_classes: int, device: torch.device, repeats: int,
                          warmup: int) -> float:
    network.train()
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    x = torch.randn(tuple(shape), device=device)
    with torch.no_grad(), _autocast(device):
        outputs = network(x)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    targets = [torch.randint(0, num_classes, (o.shape[0], *o.shape[2:]), device=device) for o in outputs]

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device):
            out = network(x)
            out = out if isinstance(out, (list, tuple)) else [out]
            loss = sum(nn.functional.cross_entropy(o, t) for o, t in zip(out, targets))
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    return median_seconds(step, repeats, warmup, device)


def predictor_seconds(network: nn.Module, trainer_name: str, plans_manager, configuration_manager, dataset_json,
                      device: torch.device, tile_step_size: float, mirroring: bool, seed: int = 0) -> dict:
    """Seconds for one random case of the plan's median shape through nnUNetPredictor, end to end."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    patch = [int(s) for s in configuration_manager.patch_size]
    dim = len(patch)
    mirror_axes = tuple(range(dim))  # what nnU-Net's default trainer allows for these patch sizes
    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=device.type == "cuda", device=device,
                                allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, configuration_manager, [network.state_dict()],
                                    dataset_json, trainer_name, mirror_axes)
    # The plan's median case, in the axis order of the raw files (nnU-Net transposes on loading).
    backward = plans_manager.transpose_backward
    shape = [int(round(s)) for s in plans_manager.original_median_shape_after_transp]
    spacing = [float(s) for s in plans_manager.original_median_spacing_after_transp]
    raw_shape = [shape[a] for a in backward]
    raw_spacing = [spacing[a] for a in backward]
    if dim == 2:  # a 2D configuration predicts a 3D case slice by slice
        slices, tile_shape = shape[0], [int(round(s)) for s in configuration_manager.median_image_size_in_voxels][-2:]
    else:
        slices, tile_shape = 1, [int(round(s)) for s in configuration_manager.median_image_size_in_voxels]
    tile_shape = [max(s, p) for s, p in zip(tile_shape, patch)]  # smaller images are padded to the patch
    tiles = int(np.prod([len(s) for s in compute_steps_for_sliding_window(tile_shape, patch, tile_step_size)]))
    in_channels = len(dataset_json["channel_names"])
    image = np.random.default_rng(seed).normal(size=(in_channels, *raw_shape)).astype(np.float32)
    seconds = median_seconds(lambda: predictor.predict_single_npy_array(image, {"spacing": raw_spacing}), repeats=1,
                             warmup=0, device=device)
    return {"predictor_s_per_case": seconds, "predictor_case_shape": raw_shape,
            "predictor_tile_step": tile_step_size, "predictor_mirroring": mirroring,
            "predictor_mirror_axes": list(mirror_axes) if mirroring else [],
            "predictor_tiles": tiles * slices,
            "predictor_network_passes": tiles * slices * (2 ** dim if mirroring else 1)}


def measure(trainer_name: str, plans_manager, configuration_manager, dataset_json, device: torch.device,
            repeats: int = 5, warmup: int = 1, predictor: bool = False, tile_step_size: float = 0.5,
            mirroring: bool = True) -> dict:
    """All figures of one trainer on one plan, in this process."""
    trainer_class = find_trainer(trainer_name)
    patch = [int(s) for s in configuration_manager.patch_size]
    batch = int(configuration_manager.batch_size)
    network, in_channels = build_network(trainer_class, plans_manager, configuration_manager, dataset_json, False)
    classes = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    result = {"trainer": trainer_name, "patch": patch, "batch_size": batch, "in_channels": in_channels,
              "outputs": classes, "params": profiling.count_parameters(network),
              "gmac": profiling.count_gmac(network, (1, in_channels, *patch))}
    network.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result["latency_s"] = inference_seconds(network, (1, in_channels, *patch), device, repeats, warmup)
    result["gmac_per_s"] = result["gmac"] / result["latency_s"]
    result["peak_memory_inference_mb"] = _peak_memory_mb(device)
    if predictor:
        result.update(predictor_seconds(network, trainer_name, plans_manager, configuration_manager, dataset_json,
                                        device, tile_step_size, mirroring))
    deep_supervision = trains_with_deep_supervision(trainer_class)
    del network
    network, _ = build_network(trainer_class, plans_manager, configuration_manager, dataset_json, deep_supervision)
    network.to(device)
    if device.type == "cpu":  # as our trainers' initialize does
        apply_training_memory_format(network, len(patch) + 2)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result["train_step_s"] = training_step_seconds(network, (batch, in_channels, *patch), classes, device,
                                                   max(1, repeats // 2), warmup)
    result["peak_memory_training_mb"] = _peak_memory_mb(device)
    result["training_deep_supervision"] = deep_supervision
    result["threads"] = torch.get_num_threads()
    return result


def add_speedups(rows: list[dict], reference: dict) -> None:
    """Speed-up (reference latency / ours) next to the MAC ratio (reference GMAC / ours), in place."""
    for row in rows:
        if "error" in row:
            continue
        row["speedup_vs_reference"] = reference["latency_s"] / row["latency_s"]
        row["mac_ratio_vs_reference"] = reference["gmac"] / row["gmac"]
        row["train_speedup_vs_reference"] = reference["train_step_s"] / row["train_step_s"]
        if "predictor_s_per_case" in row and "predictor_s_per_case" in reference:
            row["predictor_speedup_vs_reference"] = reference["predictor_s_per_case"] / row["predictor_s_per_case"]


def _child_command(entry: Entry, dataset: str, configuration: str, options: dict) -> list[str]:
    return [sys.executable, "-m", "nnunet_lightseg.plan_profile", json.dumps(
        {"trainer": entry.trainer, "plans": entry.plans, "dataset": dataset, "configuration": configuration,
         **options})]


def profile(config: ProfileConfig, progress: Callable[[str], None] = print, run=subprocess.run,
            env: dict | None = None) -> dict:
    """Profile every entry in its own process (`run`, with environment `env`); the reference
    (nnU-Net's default) is added if missing. Raises ProfileError when the profile cannot start."""
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ProfileError("--device cuda asked for, but torch sees no GPU; use --device cpu.")
    entries = list(config.entries)
    reference = next((e for e in entries if e.is_nnunet_default), None)
    if reference is None:
        reference = Entry(REFERENCE)
        entries = [reference, *entries]
    options = {"device": device, "threads": config.threads, "repeats": config.repeats, "predictor": config.predictor,
               "tile_step_size": config.tile_step_size, "mirroring": config.mirroring}
    rows = []
    for i, entry in enumerate(entries):
        progress(f"[{i + 1}/{len(entries)}] profiling {entry.name} on {config.dataset} {config.configuration} "
                 f"({device})")
        done = run(_child_command(entry, config.dataset, config.configuration, options), stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True, env=env)
        if done.returncode == 0:
            row = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            row = {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
        rows.append({"entry": entry.name, "plans": entry.plans, **row})
    reference_row = rows[entries.index(reference)]
    if "error" not in reference_row:
        add_speedups(rows, reference_row)
    return {"dataset": dataset_name(config.dataset), "configuration": config.configuration,
            "reference": reference.name, "device": device, "repeats": config.repeats,
            "machine": machine(device, config.threads), "results": rows}


TABLE_COLUMNS = (("entry", "{}"), ("params", "{:,}"), ("gmac", "{:.2f}"), ("latency_s", "{:.4f}"),
                 ("gmac_per_s", "{:.1f}"), ("train_step_s", "{:.3f}"), ("peak_memory_training_mb", "{:.0f}"),
                 ("predictor_s_per_case", "{:.2f}"), ("speedup_vs_reference", "{:.2f}x"),
                 ("mac_ratio_vs_reference", "{:.2f}x"))


def format_table(result: dict) -> str:
    """The profile as aligned text; an entry that failed shows its error."""
    columns = [(key, fmt) for key, fmt in TABLE_COLUMNS if any(key in row for row in result["results"])]
    lines = [[key for key, _ in columns]]
    for row in result["results"]:
        if "error" in row:
            lines.append([row["entry"], f"FAILED: {row['error']}"])
        else:
            lines.append([fmt.format(row[key]) if key in row else "-" for key, fmt in columns])
    widths = [max(len(line[i]) for line in lines if i < len(line) and len(line) == len(columns))
              for i in range(len(columns))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) if len(line) == len(columns) else
            "  ".join(line) for line in lines]
    m = result["machine"]
    text.append(f"reference: {result['reference']}; speed-up = reference latency / latency, MAC ratio = reference "
                f"GMAC / GMAC; device {result['device']}, {m['torch_threads']} threads, {m['cpu']}, "
                f"torch {m['torch']}, nnunetv2 {m['nnunetv2']}")
    return "\n".join(text)


def default_output(dataset: str, configuration: str) -> str:
    """Where the report looks for the profile: beside the dataset's results."""
    return os.path.join(results_folder(dataset), f"lightseg_profile_{configuration}.json")


def check_output(path: str) -> None:
    """Raise OutputFolderError unless `path` is new or a profile of ours (which a rerun rewrites)."""
    if os.path.exists(path) and not _is_profile(path):
        raise OutputFolderError(f"--output {path} exists and is not a profile written by nnunet-lightseg: give a new "
                                f"file name, or move that file away first.")


def _is_profile(path: str) -> bool:
    try:
        with open(path) as f:
            written = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(written, dict) and "nnunet_lightseg" in written.get("machine", {}) and "results" in written


def write(result: dict, path: str) -> None:
    """Write the profile atomically; refuses (check_output) a file that is not a profile of ours."""
    check_output(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    output_folder.write_atomically(path, json.dumps(result, indent=2))


def machine(device: str, threads: int | None) -> dict:
    from importlib.metadata import version

    description = profiling.machine_description()
    description.update({"device": device, "torch_threads": threads or torch.get_num_threads(),
                        "nnunetv2": version("nnunetv2"), "monai": version("monai"),
                        "nnunet_lightseg": version("nnunet-lightseg"), "numpy": np.__version__})
    if device == "cuda":
        description["gpu"] = torch.cuda.get_device_name(0)
        description["cuda"] = torch.version.cuda
    return description


def _child(options: dict) -> dict:
    if options.get("threads"):
        torch.set_num_threads(int(options["threads"]))
    baseline_rss = _peak_memory_mb(torch.device("cpu"))  # Python and torch imported, no network yet
    plans_manager, configuration_manager, dataset_json = load_plan(options["dataset"], options["plans"],
                                                                    options["configuration"])
    result = measure(options["trainer"], plans_manager, configuration_manager, dataset_json,
                     torch.device(options["device"]), repeats=options["repeats"], predictor=options["predictor"],
                     tile_step_size=options["tile_step_size"], mirroring=options["mirroring"])
    result["process_rss_before_network_mb"] = baseline_rss
    return result


if __name__ == "__main__":
    # One entry, in a fresh process: the JSON result is the last line of stdout.
    try:
        print(json.dumps(_child(json.loads(sys.argv[1]))))
    except (LightSegError, ValueError) as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(2)
