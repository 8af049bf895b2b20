"""Resource limits the kernel enforces per process (RLIMIT_*): memory, file size, processes."""

from __future__ import annotations

import os
import resource
from typing import Any

MB = 1024 * 1024


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


def apply(
    *, memory_mb: int, max_file_size_mb: int, max_processes: int, nproc_baseline: int = 0
) -> dict[str, Any]:
    """Set soft and hard limits (hard too, so user code cannot raise them back)."""
    address_space = current_vm_bytes() + memory_mb * MB
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
    for which, value in limits.items():
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))
    return {"address_space_mb": address_space // MB, "fsize_mb": max_file_size_mb, "nproc": nproc}
