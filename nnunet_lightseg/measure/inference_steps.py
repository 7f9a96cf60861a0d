"""Per-patch CPU inference latency of the default paper models against nnU-Net's default network.

Every network runs in eval mode under torch.inference_mode, float32, batch 1, on a random patch.
Each model is timed at every step of the CPU inference engine (cpu_inference.py), cumulatively:

    plain            the training graph, default memory format
    +channels-last   weights and input channels-last
    +conv rewrites   batch norm folded, activations fused into oneDNN convs, 1x1 convs as matmuls
    +network rules   the engine's block rules (= what `nnUNetv2_predict` runs)

nnU-Net's default net (PlainConvUNet from the plan) is timed plain and channels-last. All
(model, step) pairs run once per round, interleaved, so machine load affects all alike; the table
gives the minimum and the median over rounds. GMAC are counted on the plain graph.

    python -m nnunet_lightseg.measure.inference_steps                 # Hippocampus plan patch and paper inputs
    python -m nnunet_lightseg.measure.inference_steps --plans PATH    # another nnUNetPlans.json (3d_fullres)

Every network runs with freed memory kept mapped (`allocator.keep_freed_memory`, as the engine sets it
in `nnUNetv2_predict`), nnU-Net's too, so that the ratios compare networks;
NNUNET_LIGHTSEG_KEEP_FREED_MEMORY=0 times them all with glibc's defaults.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics

import torch

from nnunet_lightseg import registry
from nnunet_lightseg.allocator import keep_freed_memory
from nnunet_lightseg.cpu_inference import build_inference_copy, run_inference_copy
from nnunet_lightseg.measure import markdown_table
from nnunet_lightseg.memory_layout import channels_last_format
from nnunet_lightseg.nnunet_env import DEFAULT_MODELS
from nnunet_lightseg.profiling import count_gmac, machine_description
from nnunet_lightseg.timing import timed_runs
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

# Task04_Hippocampus planned by nnUNetv2_plan_experiment -d 4 (nnunetv2 2.8.1): 3d_fullres.
HIPPOCAMPUS = {
    "patch_size": [40, 56, 40], "input_channels": 1, "classes": 3,
    "architecture": {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 4, "features_per_stage": [32, 64, 128, 256],
                        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 4,
                        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2, 2, 2, 2],
                        "n_conv_per_stage_decoder": [2, 2, 2], "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
}
STEPS = {
    "plain": None,
    "+channels-last": ("memory_format",),
    "+conv rewrites": ("memory_format", "rewrite_convs"),
    "+network rules": ("memory_format", "rewrite_convs", "block_rules"),
}


def plan_from_file(path: str) -> dict:
    plans = json.load(open(path))
    configuration = plans["configurations"]["3d_fullres"]
    dataset = json.load(open(os.path.join(os.path.dirname(path), "dataset.json")))
    return {"patch_size": configuration["patch_size"], "input_channels": len(dataset["channel_names"]),
            "classes": len(dataset["labels"]), "architecture": configuration["architecture"]}


def nnunet_default(plan: dict) -> torch.nn.Module:
    arch = plan["architecture"]
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  plan["input_channels"], plan["classes"], deep_supervision=False)


def model_for_plan(plan: dict, name: str) -> torch.nn.Module:
    """A registered model built for the plan's input channels, classes, patch and downsampling steps (plain)."""
    steps = [tuple(s) for s in plan["architecture"]["arch_kwargs"]["strides"][1:]]
    return registry.get(name).create(registry.Plan(plan["input_channels"], plan["classes"], plan["patch_size"], steps))


def variants(network: torch.nn.Module, ndim: int, ours: bool) -> dict:
    """Callables per step: the plain network and copies with the cumulative rewrites."""
    network.eval()
    if not ours:
        last = channels_last_format(ndim)
        copied = copy.deepcopy(network).to(memory_format=last)
        return {"plain": network, "+channels-last": lambda x: copied(x.contiguous(memory_format=last)).contiguous()}

    calls = {"plain": network}  # built from the registry: the engine is not enabled on it
    for step, rewrites in list(STEPS.items())[1:]:
        fast = build_inference_copy(network, ndim, rewrites)
        calls[step] = lambda x, fast=fast: run_inference_copy(fast, x)
    return calls


def cases(plan: dict, models, inputs) -> list[dict]:
    """(label, input shape, callables per step, GMAC) for nnU-Net's default net and each model."""
    out = []
    if "plan" in inputs:
        shape = (1, plan["input_channels"], *plan["patch_size"])
        default = nnunet_default(plan)
        out.append(dict(model="nnU-Net default (PlainConvUNet)", input="plan", shape=shape,
                        calls=variants(default, len(shape), ours=False), gmac=count_gmac(default, shape)))
        for name in models:
            net = model_for_plan(plan, name)
            out.append(dict(model=name, input="plan", shape=shape, calls=variants(net, len(shape), True),
                            gmac=count_gmac(net, shape)))
    if "paper" in inputs:
        for name in models:
            figures = registry.get(name).paper_figures[3]
            shape = (1, *figures.input)
            net = registry.get(name).create(figures.plan)
            out.append(dict(model=name, input="paper", shape=shape, calls=variants(net, len(shape), True),
                            gmac=count_gmac(net, shape)))
    return out


def run(all_cases: list[dict], rounds: int) -> None:
    """Warm every step up (checking it computes what the plain step does), then time `rounds`
    interleaved rounds of all (case, step) pairs into case["times"]."""
    inputs = {id(c): torch.randn(c["shape"]) for c in all_cases}
    with torch.inference_mode():
        for case in all_cases:  # the warm-up, and a check that every step computes the same function
            x = inputs[id(case)]
            reference = case["calls"]["plain"](x)
            case["max_diff"] = max(float((call(x) - reference).abs().max()) for call in case["calls"].values())
        calls = {(index, step): (lambda call=call, x=inputs[id(case)]: call(x))
                 for index, case in enumerate(all_cases) for step, call in case["calls"].items()}
        times = timed_runs(calls, repeats=rounds, warmup=0)
    for index, case in enumerate(all_cases):
        case["times"] = {step: times[(index, step)] for step in case["calls"]}


def report(all_cases: list[dict], threads: int, rounds: int, kept: bool, load_before, load_after) -> str:
    baseline = next((c for c in all_cases if c["model"].startswith("nnU-Net")), None)
    base_best = min(min(t) for t in baseline["times"].values()) if baseline else None
    lines = [f"machine: {machine_description()}, {os.cpu_count()} logical CPUs, torch threads {threads}, "
             f"{rounds} interleaved rounds, freed memory kept (allocator.py): {kept}; load average before "
             f"{load_before}, after {load_after}", ""]
    rows = []
    for c in all_cases:
        for step, times in c["times"].items():
            best, median = min(times), statistics.median(times)
            ratio = f"{base_best / best:.1f}" if base_best and c["input"] == "plan" else ""
            rows.append([c["model"], "x".join(map(str, c["shape"][1:])), f"{c['gmac']:.3f}", step, f"{best * 1e3:.1f}",
                         f"{median * 1e3:.1f}", f"{c['gmac'] / best:.1f}", ratio, f"{c['max_diff']:.1e}"])
    return "\n".join(lines + markdown_table(["model", "input", "GMAC", "step", "min ms", "median ms", "GMAC/s (min)",
                                              "x nnU-Net best (min)", "max diff"], rows))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--inputs", nargs="+", default=["plan", "paper"], choices=["plan", "paper"])
    parser.add_argument("--plans", help="nnUNetPlans.json to take the 3d_fullres plan from (default: Hippocampus)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kept = keep_freed_memory()  # as `nnUNetv2_predict` with our trainers does, for every network here
    plan = plan_from_file(args.plans) if args.plans else HIPPOCAMPUS
    all_cases = cases(plan, args.models, args.inputs)
    load_before = os.getloadavg()[0]
    run(all_cases, args.rounds)
    print(report(all_cases, args.threads, args.rounds, kept, load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
