"""allocator.keep_freed_memory: freed activations stay mapped, so a second forward does not fault
its pages in again (issue 14); off by environment variable; set by the engine's first copy call."""
import os
import subprocess
import sys

import pytest
import torch

from nnunet_lightseg import allocator, cpu_inference, registry

# Page faults of the 2nd-5th inference call of UltraLightUNet on a 128^3 patch (activations of
# 32-256 MiB): with glibc's defaults each call maps its activations afresh (about 175,000 faults per
# call on the 2-core machine); with freed memory kept, about none once the first call has run.
FAULTS_PER_CALL = """
import resource, torch
from nnunet_lightseg import registry
from nnunet_lightseg.allocator import keep_freed_memory
from nnunet_lightseg.cpu_inference import build_inference_copy, run_inference_copy
kept = keep_freed_memory()
torch.set_num_threads(1)
network = registry.get("UltraLightUNet").create(registry.Plan(1, 2, [128] * 3, [(2, 2, 2)] * 4)).eval()
fast, x, faults = build_inference_copy(network, 5), torch.randn(1, 1, 128, 128, 128), []
with torch.inference_mode():
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        run_inference_copy(fast, x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, sum(faults[1:]))
"""


def _faults_after_the_first_call(env_value: str) -> tuple[str, int]:
    env = {**os.environ, allocator.ENVIRONMENT_VARIABLE: env_value}
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_CALL], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(allocator._glibc() is None, reason="mallopt is glibc's; this C library is not glibc")
def test_freed_memory_stays_mapped_and_the_switch_turns_it_off():
    kept, faults_kept = _faults_after_the_first_call("1")
    default, faults_default = _faults_after_the_first_call("0")
    assert (kept, default) == ("True", "False")
    assert faults_default > 100_000
    assert faults_kept < faults_default / 10


def test_the_engine_keeps_freed_memory_from_its_first_copy_call(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_inference, "keep_freed_memory", lambda: calls.append(1))
    network = cpu_inference.enable(registry.get("VeloxSeg").create(registry.Plan(1, 2, [32, 32, 32], [(2, 2, 2)] * 4)))
    network.eval()
    with torch.no_grad():
        network.train()(torch.randn(1, 1, 32, 32, 32))  # training mode: the plain graph, no call
        assert calls == []
        network.eval()(torch.randn(1, 1, 32, 32, 32))
    assert calls
