"""Resource limits the kernel enforces per process (RLIMIT_*): memory, file size, processes.

Memory: where the worker's cgroup unit bounds memory, RLIMIT_AS is only a generous backstop
(address space is not memory: libraries reserve far more than they touch, and an AS limit near
memory_mb made ``import sklearn`` fail to map ``libgfortran``). Without a memory cgroup the
bound is RLIMIT_DATA (private writable mappings: heap, anonymous mmap, thread stacks; not
shared libraries' code or file mappings) at baseline + memory_mb, plus the supervisor's RSS
watch for what RLIMIT_DATA does not count (shared anonymous mappings).

Stack (restricted workers): CPython recurses on the C stack without any check in a few places
(hashing a tuple nested a million deep: 64 bytes of stack per level on 3.11, so an 8 MB stack
ends in SIGSEGV at ~131,000 levels). A restricted worker's main-thread stack may grow to
:func:`stack_bound_mb` (``2 * memory_mb + 64``): more than its memory limit can pay for, so any
such recursion ends as the memory limit (the cgroup's OOM kill, or RLIMIT_DATA's MemoryError:
every level of nesting is a heap object of at least 48 bytes, for at most 64 bytes of stack
measured on 3.11), never as a stack overflow. The kernel fixes how much room it leaves below
the main stack when the program is exec'd (RLIMIT_STACK then, whatever ASLR does), so the
restricted zygote re-execs itself once with :data:`STACK_ROOM_MB` (:func:`reserve_stack_room`).
"""

from __future__ import annotations

import os
import resource
from typing import Any

MB = 1024 * 1024
#: RLIMIT_AS backstop: baseline + this many times memory_mb + BACKSTOP_EXTRA_MB.
BACKSTOP_FACTOR = 4
BACKSTOP_EXTRA_MB = 4096
#: Address space (not memory) a restricted zygote keeps free below its main thread's stack.
STACK_ROOM_MB = 32 * 1024
#: Python threads of a process exec'd with a big RLIMIT_STACK (glibc's default stack size for
#: new threads is RLIMIT_STACK at start-up: 32 GB threads would not even start).
THREAD_STACK_BYTES = 8 * MB


def probe() -> dict[str, Any]:
    root = os.geteuid() == 0
    return {
        "available": True,
        "nproc_effective": not root,
        "detail": "setrlimit available"
        + ("; RLIMIT_NPROC is not enforced for root (uid 0 is exempt)" if root else ""),
        "stack_room_mb": stack_room_mb(),
    }


def stack_bound_mb(memory_mb: int) -> int:
    """Main-thread stack of a restricted worker: more than ``memory_mb`` can pay for, with the
    measured worst case of stack per byte of heap (64 per 48) doubled for margin."""
    return 2 * memory_mb + 64


def reserve_stack_room(mb: int) -> bool:
    """Raise the soft RLIMIT_STACK to ``mb`` (up to the hard limit) for the process image that
    is exec'd next. True when it was raised: the caller must re-exec itself to get the room
    (the kernel places the memory mappings below the stack at exec, from RLIMIT_STACK then).
    An unlimited soft limit already gives all the room there is (the legacy layout)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    want = _stack_target(mb, hard)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return False
    resource.setrlimit(resource.RLIMIT_STACK, (want, hard))
    return True


def stack_room_mb() -> int | None:
    """Room below the main stack a restricted zygote started from here gets (its soft
    RLIMIT_STACK after :func:`reserve_stack_room`; None: unlimited, all there is)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(soft, _stack_target(STACK_ROOM_MB, hard)) // MB


def _stack_target(mb: int, hard: int) -> int:
    """The soft RLIMIT_STACK asked for ``mb`` MB of room: as much as the hard limit allows."""
    return mb * MB if hard == resource.RLIM_INFINITY else min(mb * MB, hard)


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
    memory_unit: bool = False, stack_mb: int | None = None,
) -> dict[str, Any]:
    """Set soft and hard limits (hard too, so user code cannot raise them back).

    ``memory_unit``: a memory cgroup bounds this worker, so no RLIMIT_DATA is needed.
    ``stack_mb``: the main thread's stack limit (restricted workers), at most the room the
    zygote was exec'd with.
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
    stack = None
    if stack_mb is not None:
        room = resource.getrlimit(resource.RLIMIT_STACK)[0]
        stack = stack_mb * MB if room == resource.RLIM_INFINITY else min(stack_mb * MB, room)
        limits[resource.RLIMIT_STACK] = stack
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
            "data_mb": None if data is None else data // MB,
            "stack_mb": None if stack is None else stack // MB}
