"""cgroups: one accounting unit per worker (a session, or a one-shot run) that nothing inside
can leave.

cgroup v1 (root on hosts that mount it): each worker places itself, during confinement, in
``<its cgroup>/agenticraft/<zygote>-<worker>`` of every writable controller among memory, cpu,
cpuacct, pids and freezer, with ``memory.limit_in_bytes`` = memory_mb, ``cpu.cfs_quota_us`` =
cpu_percent of a period and ``pids.max`` = max_processes. Everything it forks later (a session's
runners, their children, what a checkpoint's threads fork) is born in the same groups; sandboxed
code cannot move out (the cgroup files are outside its Landlock write set, and in a user
namespace it holds no capability over them). The supervisor measures, freezes and kills the
unit through the same paths (:mod:`agenticraft.sandbox.unit`); the zygote removes the groups
once the worker is gone.

cgroup v2: a subtree delegated to this user is detected and reported; placing workers there is
not implemented yet (the "no internal processes" rule needs the owner's own process moved to a
leaf first), so unprivileged hosts use the fallback (RLIMIT_DATA + RSS watch, process-group
freeze); ``doctor`` says which.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MB = 1024 * 1024
V1_MOUNT = Path("/sys/fs/cgroup")
#: The v1 controllers a unit uses (cpuacct for CPU time; freezer to stop it atomically).
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
#: A long period lets short cells burst (a 200 MB checkpoint fork is tens of ms of CPU) while
#: a spinner still gets exactly its share per second.
CFS_PERIOD_US = 1_000_000
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
    """The accounting unit: cgroup v1 controllers where writable, else what v2 offers."""
    v1 = v1_bases()
    if "memory" in v1 or "freezer" in v1 or "cpu" in v1:
        return {"available": True, "version": 1, "bases": {k: str(v) for k, v in v1.items()},
                "controllers": sorted(v1),
                "detail": "cgroup v1 unit per worker: " + ", ".join(sorted(v1))}
    return {"available": False, **_probe_v2()}


def _probe_v2() -> dict[str, Any]:
    group = _own_cgroup_v2()
    if group is None:
        return {"detail": "no writable cgroup v1 controllers and no cgroup v2 hierarchy"}
    try:
        enabled = (group / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return {"detail": f"cannot read {group}: {exc.strerror}"}
    missing = [c for c in WANTED if c not in enabled]
    writable = os.access(group, os.W_OK) and os.access(group / "cgroup.procs", os.W_OK)
    why = []
    if missing:
        why.append(f"cgroup v2 controllers {', '.join(missing)} not enabled in {group}")
    if not writable:
        why.append(f"{group} is not delegated (not writable)")
    if not why:
        why.append(f"cgroup v2 subtree {group} is delegated, but placing workers there is not "
                   "implemented yet")
    return {"detail": "; ".join(why)}


def _own_v1_path(controller: str) -> str:
    """This process's group in a v1 hierarchy (``/`` when not found)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return "/"


def v1_bases() -> dict[str, Path]:
    """Writable ``<mount>/<own group>/agenticraft`` directories, per v1 controller."""
    bases = {}
    for controller in V1_CONTROLLERS:
        mount = V1_MOUNT / controller
        if not (mount / "cgroup.procs").exists():
            continue
        own = mount / _own_v1_path(controller).lstrip("/")
        if os.access(own, os.W_OK):
            bases[controller] = own / "agenticraft"
    return bases


def pids_v1_probe() -> dict[str, Any]:
    """Kept as its own switch (``AGENTICRAFT_DISABLE=pids_cgroup``): the unit's pids.max."""
    if "pids" in v1_bases():
        return {"available": True, "detail": "cgroup v1 pids.max in the worker's unit"}
    return {"available": False, "detail": "no writable cgroup v1 pids hierarchy"}


def unit_paths(bases: dict[str, str], name: str) -> dict[str, Path]:
    return {controller: Path(base) / name for controller, base in bases.items()}


def place(bases: dict[str, str], name: str, *, memory_mb: int, cpu_percent: float,
          max_processes: int) -> dict[str, Any]:
    """Create the unit ``name`` with its limits and move this process into it."""
    paths = unit_paths(bases, name)
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    if "memory" in paths:
        (paths["memory"] / "memory.limit_in_bytes").write_text(str(memory_mb * MB))
    if "cpu" in paths and cpu_percent < 100.0 * (os.cpu_count() or 1):
        quota = max(1000, int(CFS_PERIOD_US * cpu_percent / 100.0))
        (paths["cpu"] / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (paths["cpu"] / "cpu.cfs_quota_us").write_text(str(quota))
    if "pids" in paths:
        (paths["pids"] / "pids.max").write_text(str(max_processes))
    for path in paths.values():
        (path / "cgroup.procs").write_text("0")
    return {"unit": name, "controllers": sorted(paths)}


def remove(bases: dict[str, str], name: str) -> bool:
    """Remove the unit's groups (refused by the kernel while a process is still inside)."""
    gone = True
    for path in unit_paths(bases, name).values():
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            gone = False
    return gone
