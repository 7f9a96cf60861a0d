"""Keep freed memory in the process, so that CPU inference does not fault its pages in again on every call.

glibc's malloc hands a block above its mmap threshold (dynamic, at most 32 MiB) to the kernel when
it is freed, and returns the top of its heap when more than the trim threshold (twice the mmap
threshold) is free there. A network's forward frees and reallocates its activations on every call,
so each call touches fresh pages, which the kernel maps and zeroes one at a time: on the 2-core
machine, per 128^3 patch of a CT-like plan, LightMedSeg took 684 ms with 313,619 page faults per
call and 326 ms with 3,413 with both thresholds at 1 GiB; UltraLightUNet 426 and 209 ms, nnU-Net's
default network 5018 and 3397 ms (`python -m nnunet_lightseg.measure.freed_memory`; docs/performance.md,
"Freed memory, per patch"). Nothing numeric changes; the process keeps up to THRESHOLD bytes of
freed memory mapped instead of returning it.

`keep_freed_memory()` sets both thresholds once per process, through `mallopt`, where the C library
is glibc. The CPU inference engine calls it when a network first runs its inference copy, and
`nnunet-lightseg predict` when it starts. NNUNET_LIGHTSEG_KEEP_FREED_MEMORY=0 leaves malloc alone.
"""
from __future__ import annotations

import ctypes
import logging
from functools import lru_cache

from nnunet_lightseg.nnunet_env import switched_off

ENVIRONMENT_VARIABLE = "NNUNET_LIGHTSEG_KEEP_FREED_MEMORY"
THRESHOLD = 1 << 30  # bytes: blocks up to 1 GiB come from the heap, and up to 1 GiB free stays mapped
# mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_log = logging.getLogger(__name__)


def _glibc():
    """The process's C library where it is glibc (it has gnu_get_libc_version), else None."""
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


@lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds to THRESHOLD, once per process; whether they were set.

    Not where NNUNET_LIGHTSEG_KEEP_FREED_MEMORY is off or the C library is not glibc (macOS,
    Windows, musl), where it says why at debug level and changes nothing.
    """
    if switched_off(ENVIRONMENT_VARIABLE):
        _log.debug(f"nnunet-lightseg: {ENVIRONMENT_VARIABLE} is off; malloc keeps its defaults")
        return False
    libc = _glibc()
    if libc is None:
        _log.debug("nnunet-lightseg: the C library is not glibc; malloc keeps its defaults")
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD))
