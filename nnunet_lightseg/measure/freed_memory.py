"""Per-patch CPU inference with glibc's malloc defaults against freed memory kept (allocator.py, issue 14).

Each (network, setting) runs in a fresh process, since the setting holds for a process's life: the
network is built from the plan (nnU-Net's default network from the plan's architecture, ours from
the registry, through the CPU inference engine as `nnUNetv2_predict` runs them), then called
--calls times on a random patch of the plan's size. Reported per network and setting: the fastest
call after the first, the page faults per call after the first, and the process's peak memory.

    python -m nnunet_lightseg.measure.freed_memory --plans PLANS --calls 4 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from nnunet_lightseg import allocator
from nnunet_lightseg.measure import markdown_table
from nnunet_lightseg.measure.inference_steps import HIPPOCAMPUS, model_for_plan, nnunet_default, plan_from_file
from nnunet_lightseg.nnunet_env import DEFAULT_MODELS
from nnunet_lightseg.profiling import machine_description

REFERENCE = "nnU-Net default"


def measure(plan: dict, model: str, calls: int, threads: int) -> dict:
    """In this process: seconds and page faults of each call, peak memory (MiB), and whether freed memory was kept."""
    from nnunet_lightseg.cpu_inference import build_inference_copy, run_inference_copy

    kept = allocator.keep_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    shape = (1, plan["input_channels"], *plan["patch_size"])
    if model == REFERENCE:
        run = nnunet_default(plan).eval()
    else:
        copy = build_inference_copy(model_for_plan(plan, model), len(shape))
        run = lambda x: run_inference_copy(copy, x)  # noqa: E731
    x = torch.randn(shape)
    seconds, faults = [], []
    with torch.inference_mode():
        for _ in range(calls):
            before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            run(x)
            seconds.append(time.perf_counter() - start)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"model": model, "kept": kept, "shape": list(shape), "seconds": seconds, "faults": faults,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def in_fresh_process(plan: dict, model: str, calls: int, threads: int, keep: bool) -> dict:
    """`measure` in a fresh Python process, with freed memory kept or glibc's defaults."""
    env = {**os.environ, allocator.ENVIRONMENT_VARIABLE: "1" if keep else "0"}
    code = (f"import json; from nnunet_lightseg.measure.freed_memory import measure; "
            f"print(json.dumps(measure({plan!r}, {model!r}, {calls}, {threads})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def markdown(rows: list[dict]) -> list[str]:
    table = []
    by = {(r["model"], r["kept"]): r for r in rows}
    for (model, kept), r in by.items():
        best = min(r["seconds"][1:])
        reference = by.get((REFERENCE, kept))
        ratio = f"{min(reference['seconds'][1:]) / best:.1f}" if reference else ""
        table.append([model, "kept" if kept else "glibc defaults", f"{best * 1e3:.0f}",
                      f"{sum(r['faults'][1:]) / (len(r['faults']) - 1):.0f}", f"{r['peak_mib']:.0f}", ratio])
    return markdown_table(["network", "malloc", "min ms (calls 2+)", "page faults per call (2+)", "peak MiB",
                           "x nnU-Net (same malloc)"], table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", help="nnUNetPlans.json (3d_fullres; dataset.json beside it); default: Hippocampus")
    parser.add_argument("--models", nargs="+", default=[REFERENCE, *DEFAULT_MODELS])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.calls < 2:
        parser.error("--calls must be at least 2: the first call is not counted")
    plan = plan_from_file(args.plans) if args.plans else HIPPOCAMPUS
    load_before = os.getloadavg()[0]
    rows = [in_fresh_process(plan, model, args.calls, args.threads, keep)
            for model in args.models for keep in (False, True)]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"machine: {machine_description()}, torch threads {args.threads}, {args.calls} calls per process; "
          f"load average before {load_before:.1f}, after {os.getloadavg()[0]:.1f}\n")
    print("\n".join(markdown(rows)))


if __name__ == "__main__":
    main()
