"""cgroups: one accounting unit per worker (a session, or a one-shot run) that nothing inside
can leave.

cgroup v1 (root on hosts that mount it): each worker places itself, during confinement, in
``<its cgroup>/agenticraft/<zygote>-<worker>`` of every writable controller among memory, cpu,
cpuacct, pids and freezer, with ``memory.limit_in_bytes`` = memory_mb, ``cpu.cfs_quota_us`` =
cpu_percent of a period and ``pids.max`` = max_processes.

cgroup v2 (an unprivileged user under systemd, which delegates a subtree to each user's
service: the directory and its ``cgroup.procs``, ``cgroup.subtree_control`` and
``cgroup.threads`` belong to the user): the zygote first moves the processes of the delegated
group into the leaf ``<delegated>/agenticraft-parent`` (a group that hands controllers to its
children may hold no processes itself), enables in ``cgroup.subtree_control`` the controllers
among memory, cpu and pids that the subtree offers, and each worker places itself in
``<delegated>/agenticraft/<zygote>-<worker>`` with ``memory.max``/``memory.swap.max``,
``cpu.max`` and ``pids.max`` as far as those controllers exist. The core of v2 needs no
controller: ``cgroup.procs`` (members), ``cgroup.freeze`` (stop all at once), ``cgroup.kill``
(kernel >= 5.14) and ``cpu.stat``. What the subtree offers is detected, never assumed.

Everything a worker forks later (a session's runners, their children, what a checkpoint's
threads fork) is born in its unit; sandboxed code cannot move out (the cgroup files are outside
its Landlock write set and its private root; in a user namespace it holds no capability over
them). Under v2 the unit's files belong to the user the code runs as, so a v2 unit is only used
with Landlock or a private root in force. The supervisor measures, freezes and kills the unit
through the same paths (:mod:`agenticraft.sandbox.unit`); the zygote removes the groups once
the worker is gone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1024 * 1024
V1_MOUNT = Path("/sys/fs/cgroup")
#: Where a cgroup2 hierarchy is mounted: alone (unified hosts) or next to v1 (hybrid hosts).
V2_MOUNTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
#: The v1 controllers a unit uses (cpuacct for CPU time; freezer to stop it atomically).
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
#: A long period lets short cells burst (a 200 MB checkpoint fork is tens of ms of CPU) while
#: a spinner still gets exactly its share per second.
CFS_PERIOD_US = 1_000_000
WANTED = ("memory", "cpu", "pids")
#: v2: the leaf the delegated group's own processes move to, and the parent of the units.
PARENT_LEAF = "agenticraft-parent"
UNITS = "agenticraft"


@dataclass(frozen=True)
class Layout:
    """Where a worker's unit lives and what it can do here.

    ``bases``: v1, one directory per controller; v2, ``{"unified": dir}``. ``caps``: among
    memory, cpu, pids (limits), cpuacct (CPU time), freezer (stop all at once), kill (one write
    kills all)."""

    version: int
    bases: dict[str, str]
    caps: frozenset[str]

    def paths(self, name: str) -> dict[str, Path]:
        return {key: Path(base) / name for key, base in self.bases.items()}


# -- detection ------------------------------------------------------------------------------------
def probe(v1: bool = True) -> dict[str, Any]:
    """The accounting unit: cgroup v1 controllers where writable, else a delegated v2 subtree.
    ``v1=False`` (``AGENTICRAFT_DISABLE=cgroup_v1``) looks only at v2."""
    bases = v1_bases() if v1 else {}
    if "memory" in bases or "freezer" in bases or "cpu" in bases:
        return {"available": True, "version": 1, "bases": {k: str(v) for k, v in bases.items()},
                "controllers": sorted(bases),
                "detail": "cgroup v1 unit per worker: " + ", ".join(sorted(bases))}
    return probe_v2()


def v2_mount() -> Path | None:
    for mount in V2_MOUNTS:
        if (mount / "cgroup.controllers").exists():  # only a cgroup2 root has this file
            return mount
    return None


def own_v2_cgroup() -> Path | None:
    mount = v2_mount()
    if mount is None:
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return mount / line[3:].strip().lstrip("/")
    return None


def delegated_v2() -> Path | None:
    """The v2 group this process may manage (its own, or the one above our own leaf)."""
    own = own_v2_cgroup()
    if own is None:
        return None
    if own.name == PARENT_LEAF:  # an earlier supervisor in this process tree moved us there
        own = own.parent
    return own


def is_delegated(group: Path) -> bool:
    """Delegated to us: systemd's Delegate=yes hands an unprivileged user's group to that user
    (chown) and marks delegated groups with a ``trusted.delegate``/``user.delegate`` xattr
    (systemd >= 251). Root may write any group, so for root only the mark counts: moving the
    processes of a service systemd manages itself would break its bookkeeping."""
    try:
        if os.geteuid() != 0 and group.stat().st_uid == os.geteuid():
            return True
    except OSError:
        return False
    for name in ("trusted.delegate", "user.delegate"):
        with contextlib.suppress(OSError):
            if os.getxattr(group, name).strip(b"\0").strip() == b"1":
                return True
    return False


def probe_v2() -> dict[str, Any]:
    group = delegated_v2()
    if group is None:
        return {"available": False,
                "detail": "no writable cgroup v1 controllers and no cgroup v2 hierarchy"}
    try:
        offered = (group / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return {"available": False, "detail": f"cannot read {group}: {exc.strerror}"}
    files = ("", "cgroup.procs", "cgroup.subtree_control")
    if not (is_delegated(group) and all(os.access(group / name, os.W_OK) for name in files)):
        return {"available": False,
                "detail": f"cgroup v2 group {group} is not delegated to this user (not its "
                          "own, or no delegate mark for root); no writable cgroup v1 "
                          "controllers either"}
    controllers = [c for c in WANTED if c in offered]
    freeze, kill = _core_features(group)
    return {"available": True, "version": 2, "delegated": str(group),
            "bases": {"unified": str(group / UNITS)}, "controllers": controllers,
            "freeze": freeze, "kill": kill, "detail": describe_v2(group, controllers, freeze,
                                                                  kill)}


def _core_features(group: Path) -> tuple[bool, bool]:
    """cgroup.freeze (kernel >= 5.2) and cgroup.kill (>= 5.14): files of every non-root group."""
    if group != v2_mount():
        return (group / "cgroup.freeze").exists(), (group / "cgroup.kill").exists()
    release = tuple(int(x) for x in os.uname().release.split(".")[:2] if x.isdigit())
    return release >= (5, 2), release >= (5, 14)


def describe_v2(group: Path | str, controllers: Iterable[str], freeze: bool, kill: bool) -> str:
    controllers = list(controllers)
    missing = [c for c in WANTED if c not in controllers]
    parts = [f"cgroup v2 unit per worker in the delegated subtree {group}",
             "controllers: " + (", ".join(controllers) or "none")]
    if missing:
        parts.append("not offered here: " + ", ".join(missing))
    parts.append("cgroup.freeze " + ("yes" if freeze else "no (kernel < 5.2)"))
    parts.append("cgroup.kill " + ("yes" if kill else "no (kernel < 5.14)"))
    return "; ".join(parts)


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
            bases[controller] = own / UNITS
    return bases


def pids_probe(info: dict[str, Any]) -> dict[str, Any]:
    """Kept as its own switch (``AGENTICRAFT_DISABLE=pids_cgroup``): the unit's pids.max."""
    if info.get("available") and "pids" in info.get("controllers", ()):
        return {"available": True,
                "detail": f"cgroup v{info['version']} pids.max in the worker's unit"}
    return {"available": False, "detail": "no pids controller in the worker's unit here"}


def layout(info: dict[str, Any], *, limits: bool, pids: bool) -> Layout | None:
    """The unit a worker gets from the probe ``info``: ``limits`` (the cgroups mechanism is on)
    and ``pids`` (pids_cgroup is on) say what of it is used."""
    if not info.get("available"):
        return None
    controllers = set(info.get("controllers", ()))
    if info["version"] == 1:
        bases = {k: v for k, v in info["bases"].items()
                 if (limits or k == "pids") and (pids or k != "pids")}
        return Layout(1, bases, frozenset(bases)) if bases else None
    caps = {c for c in controllers if (limits or c == "pids") and (pids or c != "pids")}
    if limits:
        caps |= {"cpuacct"} | ({"freezer"} if info.get("freeze") else set()) \
            | ({"kill"} if info.get("kill") else set())
    return Layout(2, dict(info["bases"]), frozenset(caps)) if caps else None


# -- the zygote's start-up (v2) -------------------------------------------------------------------
def prepare_v2(info: dict[str, Any]) -> dict[str, Any]:
    """Make the delegated group hand its controllers to our units (once, in the zygote):
    its processes (the supervisor, this zygote) move to the leaf ``agenticraft-parent``, then
    each offered controller is enabled for ``agenticraft/`` and below. Returns ``info`` with
    the controllers that are really enabled."""
    group = Path(info["delegated"])
    units = group / UNITS
    try:
        units.mkdir(exist_ok=True)
        if group != v2_mount():  # the root group is exempt from the leaf-only rule
            leaf = group / PARENT_LEAF
            leaf.mkdir(exist_ok=True)
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError, OSError):
                    (leaf / "cgroup.procs").write_text(pid)
    except OSError as exc:
        return {"available": False,
                "detail": f"cgroup v2 subtree {group} could not be prepared: {exc}"}
    enabled, refused = [], []
    for controller in info.get("controllers", ()):
        try:
            for where in (group, units):
                (where / "cgroup.subtree_control").write_text(f"+{controller}")
            enabled.append(controller)
        except OSError as exc:  # EBUSY: a process we could not move still sits in the group
            refused.append(f"{controller} ({exc.strerror})")
    detail = describe_v2(group, enabled, info.get("freeze", False), info.get("kill", False))
    if refused:
        detail += "; could not enable " + ", ".join(refused)
    return {**info, "controllers": enabled, "detail": detail}


# -- a worker's unit ------------------------------------------------------------------------------
def limit_writes(version: int, caps: Iterable[str], *, memory_mb: int, cpu_percent: float,
                 max_processes: int) -> list[tuple[str, str, str]]:
    """The ``(controller, file, value)`` writes that set these limits on a unit."""
    caps = set(caps)
    unlimited_cpu = cpu_percent >= 100.0 * (os.cpu_count() or 1)
    quota = max(1000, int(CFS_PERIOD_US * cpu_percent / 100.0))
    writes = []
    if version == 1:
        if "memory" in caps:
            writes.append(("memory", "memory.limit_in_bytes", str(memory_mb * MB)))
        if "cpu" in caps:
            writes += [("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US)),
                       ("cpu", "cpu.cfs_quota_us", "-1" if unlimited_cpu else str(quota))]
    else:
        if "memory" in caps:
            writes += [("memory", "memory.max", str(memory_mb * MB)),
                       ("memory", "memory.swap.max", "0")]
        if "cpu" in caps:
            writes.append(("cpu", "cpu.max",
                           f"{'max' if unlimited_cpu else quota} {CFS_PERIOD_US}"))
    if "pids" in caps:
        writes.append(("pids", "pids.max", str(max_processes)))
    return writes


#: v2 files a kernel may lack (memory.swap.max without swap accounting): skipped when absent.
OPTIONAL = frozenset({"memory.swap.max"})


def file_of(layout: Layout, paths: dict[str, Path], controller: str, name: str) -> Path:
    return (paths["unified"] if layout.version == 2 else paths[controller]) / name


def write_limits(layout: Layout, paths: dict[str, Path], **limits: Any) -> None:
    for controller, name, value in limit_writes(layout.version, layout.caps, **limits):
        path = file_of(layout, paths, controller, name)
        if name in OPTIONAL and not path.exists():
            continue
        path.write_text(value)


def create(layout: Layout, name: str) -> dict[str, Path]:
    paths = layout.paths(name)
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    return paths


def join(paths: dict[str, Path]) -> None:
    """Move this process into the unit (the costly part: one migration per hierarchy)."""
    for path in paths.values():
        (path / "cgroup.procs").write_text("0")


def place(layout: Layout, name: str, *, memory_mb: int, cpu_percent: float,
          max_processes: int, joined: bool = False, written: bool = False) -> dict[str, Any]:
    """Create the unit ``name`` with its limits and move this process into it (``joined``:
    the zygote's pool made and joined it ahead of time; only the limits are set; ``written``:
    a joined unit holds exactly these limits already, written ahead)."""
    paths = create(layout, name) if not joined else layout.paths(name)
    if not (joined and written):
        write_limits(layout, paths, memory_mb=memory_mb, cpu_percent=cpu_percent,
                     max_processes=max_processes)
    if not joined:
        join(paths)
    return {"unit": name, "version": layout.version, "controllers": sorted(layout.caps),
            "pre_joined": joined}


def remove(layout: Layout, name: str) -> bool:
    """Remove the unit's groups (refused by the kernel while a process is still inside)."""
    gone = True
    for path in layout.paths(name).values():
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            gone = False
    return gone
