"""Resource limits the kernel enforces per process (RLIMIT_*): memory, file size, processes.

Memory: where the worker's cgroup unit bounds memory, RLIMIT_AS is only a generous backstop
(address space is not memory: libraries reserve far more than they touch, and an AS limit near
memory_mb made ``import sklearn`` fail to map ``libgfortran``). Without a memory cgroup the
bound is RLIMIT_DATA (private writable mappings: heap, anonymous mmap, thread stacks; not
shared libraries' code or file mappings) at baseline + memory_mb, plus the supervisor's RSS
watch for what RLIMIT_DATA does not count (shared anonymous mappings).
"""

from __future__ import annotations

import os
import resource
from typing import Any

MB = 1024 * 1024
#: RLIMIT_AS backstop: baseline + this many times memory_mb + BACKSTOP_EXTRA_MB.
BACKSTOP_FACTOR = 4
BACKSTOP_EXTRA_MB = 4096


def probe() -> dict[str, Any]:
    root = os.geteuid() == 0
    return {
        "available": True,
        "nproc_effective": not root,
        "detail": "setrlimit available"
        + ("; RLIMIT_NPROC is not enforced for root (uid 0 is exempt)" if root else ""),
    }


def current_vm_bytes() -> int:
    """Virtual size of this process now: the baseline RLIMIT_AS is measured from."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def current_data_bytes() -> int:
    """What RLIMIT_DATA counts in this process now (VmData)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def apply(
    *, memory_mb: int, max_file_size_mb: int, max_processes: int, nproc_baseline: int = 0,
    memory_unit: bool = False,
) -> dict[str, Any]:
    """Set soft and hard limits (hard too, so user code cannot raise them back).

    ``memory_unit``: a memory cgroup bounds this worker, so no RLIMIT_DATA is needed.
    """
    address_space = current_vm_bytes() + (BACKSTOP_FACTOR * memory_mb + BACKSTOP_EXTRA_MB) * MB
    fsize = max_file_size_mb * MB
    nproc = nproc_baseline + max_processes
    limits = {
        resource.RLIMIT_AS: address_space,
        resource.RLIMIT_FSIZE: fsize,
        resource.RLIMIT_NPROC: nproc,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NOFILE: 512,
        resource.RLIMIT_MEMLOCK: 0,
    }
    data = None
    if not memory_unit:
        data = current_data_bytes() + memory_mb * MB
        limits[resource.RLIMIT_DATA] = data
    for which, value in limits.items():
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))
    return {"address_space_mb": address_space // MB, "fsize_mb": max_file_size_mb, "nproc": nproc,
            "data_mb": None if data is None else data // MB}
