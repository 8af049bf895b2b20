"""cgroups: a pids cgroup per worker where cgroup v1 allows it; cgroup v2 is only probed.

cgroup v1 ``pids``: where that hierarchy is writable (root), each worker is placed in its own
``agenticraft/<zygote>-<worker>`` group with ``pids.max``, which the zygote removes once the
worker is gone.

cgroup v2: ``memory.max``/``cpu.max``/``pids.max`` need a subtree delegated to this user with
those controllers enabled; it is probed and reported, not used yet. Memory therefore falls back
to RLIMIT_AS plus the supervisor's RSS watchdog and cpu_percent to duty-cycle throttling;
``doctor`` says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

WANTED = ("memory", "cpu", "pids")


def _own_cgroup_v2() -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            rel = line[3:].lstrip("/")
            for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                base = Path(mount)
                if (base / "cgroup.controllers").exists():
                    return base / rel
    return None


def probe() -> dict[str, Any]:
    group = _own_cgroup_v2()
    if group is None:
        return {"available": False, "detail": "no cgroup v2 hierarchy mounted"}
    try:
        enabled = (group / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return {"available": False, "detail": f"cannot read {group}: {exc.strerror}"}
    missing = [c for c in WANTED if c not in enabled]
    writable = os.access(group, os.W_OK) and os.access(group / "cgroup.procs", os.W_OK)
    if missing or not writable:
        why = []
        if missing:
            why.append(f"controllers {', '.join(missing)} not enabled in {group}")
        if not writable:
            why.append(f"{group} is not delegated (not writable)")
        return {"available": False, "detail": "; ".join(why)}
    return {
        "available": False,
        "detail": f"{group} is delegated, but cgroup placement is not implemented yet",
    }


# -- cgroup v1 pids controller --------------------------------------------------------------------
# Where the v1 "pids" hierarchy is writable (root on hosts that still mount cgroup v1), each
# worker gets its own pids cgroup: the kernel then refuses fork/clone beyond max_processes. This
# is what makes max_processes hold for root, whom RLIMIT_NPROC exempts.
PIDS_V1_ROOT = Path("/sys/fs/cgroup/pids")


def pids_v1_probe() -> dict[str, Any]:
    if not (PIDS_V1_ROOT / "cgroup.procs").exists():
        return {"available": False, "detail": "no cgroup v1 pids hierarchy"}
    if not os.access(PIDS_V1_ROOT, os.W_OK):
        return {"available": False, "detail": f"{PIDS_V1_ROOT} is not writable"}
    return {"available": True, "detail": f"cgroup v1 pids controller writable at {PIDS_V1_ROOT}"}


def pids_v1_place(name: str, max_processes: int) -> str:
    """Create ``agenticraft/<name>`` with pids.max and move this process into it."""
    group = PIDS_V1_ROOT / "agenticraft" / name
    group.mkdir(parents=True, exist_ok=True)
    (group / "pids.max").write_text(str(max_processes))
    (group / "cgroup.procs").write_text("0")
    return str(group)


def pids_v1_remove(name: str) -> bool:
    try:
        (PIDS_V1_ROOT / "agenticraft" / name).rmdir()
        return True
    except OSError:
        return False
