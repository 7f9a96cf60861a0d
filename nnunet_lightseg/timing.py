"""One timing helper for every measurement: the seconds of timed runs after untimed warm-up runs.

`timed_runs` interleaves several calls round by round, so that a change in machine load affects
them all alike; `median_seconds` is the common single-call case. On CUDA the device is
synchronised before and after each run. (torch.utils.benchmark.Timer.timeit adds untimed runs to
every measurement and does not interleave, which does not fit training steps or the rounds.)
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping

import torch


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(calls: Mapping[Hashable, Callable[[], object]], repeats: int, warmup: int = 1,
               device: torch.device | None = None,
               before_each: Callable[[Hashable], None] | None = None) -> dict[Hashable, list[float]]:
    """Seconds of `repeats` runs of each call, after `warmup` untimed rounds; one round runs every
    call once, in order. `before_each(key)` runs untimed before each run (e.g. zeroing gradients)."""
    times = {key: [] for key in calls}
    for round_index in range(warmup + repeats):
        for key, call in calls.items():
            if before_each is not None:
                before_each(key)
            _synchronize(device)
            start = time.perf_counter()
            call()
            _synchronize(device)
            if round_index >= warmup:
                times[key].append(time.perf_counter() - start)
    return times


def median_seconds(call: Callable[[], object], repeats: int, warmup: int = 1,
                   device: torch.device | None = None) -> float:
    """Median seconds of `repeats` runs of `call` after `warmup` untimed runs."""
    return statistics.median(timed_runs({0: call}, repeats, warmup, device)[0])
