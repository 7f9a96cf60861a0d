"""allocator.keep_freed_memory: freed activations stay mapped, so a second forward does not fault
its pages in again (issue 14); off by environment variable; set by the engine's first copy call."""
import pytest
import torch

from nnunet_lightseg import allocator, cpu_inference, registry
from nnunet_lightseg.measure import freed_memory

# Page faults of the 2nd-5th inference call of UltraLightUNet on a 128^3 patch (activations of
# 32-256 MiB), each setting in its own process (`measure.freed_memory`): with glibc's defaults each
# call maps its activations afresh (about 175,000 faults per call on the 2-core machine); with freed
# memory kept, about none once the first call has run.
PLAN_128 = {"patch_size": [128] * 3, "input_channels": 1, "classes": 2,
            "architecture": {"arch_kwargs": {"strides": [[1, 1, 1]] + [[2, 2, 2]] * 4}}}


def _faults_after_the_first_call(keep: bool) -> tuple[bool, int]:
    row = freed_memory.in_fresh_process(PLAN_128, "UltraLightUNet", calls=5, threads=1, keep=keep)
    return row["kept"], sum(row["faults"][1:])


@pytest.mark.skipif(allocator._glibc() is None, reason="mallopt is glibc's; this C library is not glibc")
def test_freed_memory_stays_mapped_and_the_switch_turns_it_off():
    kept, faults_kept = _faults_after_the_first_call(True)
    default, faults_default = _faults_after_the_first_call(False)
    assert (kept, default) == (True, False)
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
