"""The CPU inference engine of a git revision against the working tree's, per model, per patch.

Both engines build a copy of the same network (same weights) in one process, and the two copies
run interleaved, round by round (`timing.timed_runs`), so that machine load affects both alike:
a change to `cpu_inference.py` is measured apart from the run-to-run noise of separate processes.
The revision's `nnunet_lightseg/cpu_inference.py` is read with `git show` and loaded as a module of
its own; it must still run against today's networks. The table gives the minimum over rounds and
the largest difference between the two copies' outputs.

    python -m nnunet_lightseg.measure.engine_against 7710945 --rounds 25
    python -m nnunet_lightseg.measure.engine_against HEAD --plans PATH    # another nnUNetPlans.json
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import tempfile
import types

import torch

from nnunet_lightseg import cpu_inference
from nnunet_lightseg.allocator import keep_freed_memory
from nnunet_lightseg.measure import markdown_table
from nnunet_lightseg.measure.inference_steps import HIPPOCAMPUS, model_for_plan, plan_from_file
from nnunet_lightseg.nnunet_env import DEFAULT_MODELS
from nnunet_lightseg.profiling import machine_description
from nnunet_lightseg.timing import timed_runs

ENGINE = "nnunet_lightseg/cpu_inference.py"


def engine_at(revision: str) -> types.ModuleType:
    """`cpu_inference` as it was at `revision` of the repository this package is checked out in."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shown = subprocess.run(["git", "-C", root, "show", f"{revision}:{ENGINE}"], capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"git show {revision}:{ENGINE} failed: {shown.stderr.strip()}; give a revision of this "
                         "repository (a commit, tag or HEAD~N).")
    path = os.path.join(tempfile.mkdtemp(), "cpu_inference_at_revision.py")
    with open(path, "w") as file:
        file.write(shown.stdout)
    spec = importlib.util.spec_from_file_location(f"cpu_inference_at_{revision}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _first(output):
    return output[0] if isinstance(output, (list, tuple)) else output


def compare(plan: dict, models, revision: str, rounds: int) -> list[list[str]]:
    engines = {revision: engine_at(revision), "working tree": cpu_inference}
    x = torch.randn(1, plan["input_channels"], *plan["patch_size"])
    rows = []
    with torch.inference_mode():
        for name in models:
            network = model_for_plan(plan, name).eval()
            calls = {}
            for label, engine in engines.items():
                fast = engine.build_inference_copy(network, x.ndim)
                calls[label] = lambda engine=engine, fast=fast: engine.run_inference_copy(fast, x)
            difference = float((_first(calls[revision]()) - _first(calls["working tree"]())).abs().max())
            times = timed_runs(calls, repeats=rounds, warmup=2)
            before, after = (min(times[label]) * 1e3 for label in engines)
            rows.append([name, f"{before:.2f}", f"{after:.2f}", f"{before / after:.2f}", f"{difference:.1e}"])
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("revision", help="a git revision, e.g. a commit or HEAD")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--plans", help="nnUNetPlans.json to take the 3d_fullres plan from (default: Hippocampus)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    plan = plan_from_file(args.plans) if args.plans else HIPPOCAMPUS
    rows = compare(plan, args.models, args.revision, args.rounds)
    print(f"machine: {machine_description()}, torch threads {args.threads}, {args.rounds} interleaved rounds, "
          f"patch {'x'.join(map(str, plan['patch_size']))}\n")
    print("\n".join(markdown_table(["model", f"{args.revision} ms", "working tree ms", "speed-up", "max diff"], rows)))


if __name__ == "__main__":
    main()
