"""A worker's accounting unit as the supervisor holds it: everything a session (or a one-shot
run) ever started, measured, frozen and killed as one, never as a polled snapshot of a tree.

Backed by the worker's cgroups where the host has them (``jail.confine.cgroups``: memory, cpu,
cpuacct, pids, freezer), and otherwise by its process group: the worker called ``setsid()`` and
seccomp denies ``setsid``/``setpgid`` to the code inside, so every process it starts stays in
that group, including those re-parented to the zygote when their parent died. A process group
is stopped and resumed atomically by ``killpg`` (no child can wake a throttled sibling between
two signals); its members are found by a scan of /proc, done only to kill or to measure.

A session may keep one process stopped on purpose (its undo state, see ``Supervisor``): the unit
holds it, so resuming the unit never wakes it (the freezer leaves a SIGSTOPped process stopped;
without the freezer the group is resumed process by process, the held one left out).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agenticraft.jail.confine import cgroups
from agenticraft.jail.confine.apply import unit_bases

MB = 1024 * 1024


class Unit:
    """The processes of one worker (a session or a one-shot run), as one object."""

    def __init__(self, group: int, paths: Mapping[str, Path] | None = None) -> None:
        self.group = group  # the worker's process group (= its session id)
        self.paths = dict(paths or {})
        self._limits: tuple[int, float, int, int] | None = None
        self.memory_limited = self.memory  # False while the cgroup refused this run's limit
        self.held: set[int] = set()  # stopped on purpose: never resumed with the unit

    @classmethod
    def for_worker(cls, mechanisms: Mapping[str, Any], zygote_pid: int, pid: int) -> Unit:
        """The unit of worker ``pid``: the groups it placed itself in while confining itself
        (decided by the mechanisms, not by anything the worker says)."""
        active = {name for name, info in mechanisms.items() if info.get("active")}
        bases = unit_bases(mechanisms, active)
        return cls(pid, cgroups.unit_paths(bases, f"{zygote_pid}-{pid}") if bases else None)

    # -- what enforces what -----------------------------------------------------------------
    @property
    def memory(self) -> bool:
        return "memory" in self.paths

    @property
    def cpu(self) -> bool:
        return "cpu" in self.paths

    @property
    def freezer(self) -> bool:
        return "freezer" in self.paths

    def set_limits(self, memory_mb: int, cpu_percent: float, max_processes: int,
                   reserved: int = 1) -> None:
        """Apply this run's limits to the unit (a run may tighten the session's); cheap when
        unchanged. ``reserved``: the sandbox's own processes that ``max_processes`` does not
        count (a session's checkpoint, a PID namespace's keeper and init, a kept undo state)."""
        wanted = (memory_mb, cpu_percent, max_processes, reserved)
        if wanted == self._limits or not self.paths:
            return
        self._limits = wanted
        if self.memory:
            try:
                self._write("memory", "memory.limit_in_bytes", memory_mb * MB)
                self.memory_limited = True
            except OSError:  # EBUSY: the unit already uses more (a run tightened memory_mb)
                self.memory_limited = False
                self._limits = None  # try again next time
        with contextlib.suppress(OSError):
            if self.cpu:
                quota = (-1 if cpu_percent >= 100.0 * (os.cpu_count() or 1)
                         else max(1000, int(cgroups.CFS_PERIOD_US * cpu_percent / 100.0)))
                self._write("cpu", "cpu.cfs_quota_us", quota)
            if "pids" in self.paths:
                self._write("pids", "pids.max", max_processes + reserved)

    # -- members ------------------------------------------------------------------------------
    def members(self) -> list[int]:
        """Every live process of the unit."""
        for controller in ("freezer", "pids", "memory", "cpuacct", "cpu"):
            if controller in self.paths:
                text = self._read(controller, "cgroup.procs")
                if text is not None:
                    return [int(p) for p in text.split()]
        return group_members(self.group)

    # -- stop, resume, kill -------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process of the unit at once (freezer, else SIGSTOP to the group)."""
        if self.freezer:
            try:
                self._write("freezer", "freezer.state", "FROZEN")
            except OSError:  # the group is gone: so are its processes
                return
            deadline = time.monotonic() + 1.0
            while (self._read("freezer", "freezer.state") or "").strip() == "FREEZING":
                if time.monotonic() > deadline:
                    break
                time.sleep(0.001)
        else:
            self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        """Resume what ``stop`` stopped; a held process stays stopped."""
        if self.freezer:
            with contextlib.suppress(OSError):
                self._write("freezer", "freezer.state", "THAWED")
        elif self.held:
            for pid in group_members(self.group):
                if pid not in self.held:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGCONT)
        else:
            self._signal_group(signal.SIGCONT)

    def hold(self, pid: int) -> None:
        """Stop ``pid`` and keep it stopped until ``release`` (a session's undo state)."""
        self.held.add(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGSTOP)

    def release(self, pid: int, *, resume: bool) -> None:
        """Stop holding ``pid``; ``resume``: let it run again (SIGCONT)."""
        self.held.discard(pid)
        if resume:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)

    def kill(self, spare: Iterable[int] = ()) -> int:
        """Kill every process of the unit except ``spare`` (a session's checkpoint)."""
        spared = {p for p in spare if p > 0}
        self.stop()
        try:
            victims = [p for p in self.members() if p not in spared]
            for pid in victims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            self.resume()
        return len(victims)

    # -- measures -----------------------------------------------------------------------------
    def memory_bytes(self) -> int | None:
        text = self._read("memory", "memory.usage_in_bytes") if self.memory else None
        return int(text) if text else None

    def memory_peak_mb(self) -> float | None:
        text = self._read("memory", "memory.max_usage_in_bytes") if self.memory else None
        return int(text) / MB if text else None

    def reset_peak(self) -> None:
        if self.memory:
            with contextlib.suppress(OSError):
                self._write("memory", "memory.max_usage_in_bytes", 0)

    def cpu_seconds(self) -> float | None:
        """CPU time of every process the unit ever held (cpuacct), or None without it."""
        text = self._read("cpuacct", "cpuacct.usage") if "cpuacct" in self.paths else None
        return int(text) / 1e9 if text else None

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer took in this unit so far."""
        text = self._read("memory", "memory.oom_control") if self.memory else None
        for line in (text or "").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def prefer_oom(self, pid: int, preferred: bool) -> None:
        """Make ``pid`` (and what it forks) the OOM killer's first choice in the unit, so a
        session's runner goes before its checkpoint; back to normal when it is promoted."""
        if self.memory and pid > 0:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/oom_score_adj", "w") as fh:
                fh.write("1000" if preferred else "0")

    def remove(self) -> None:
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                path.rmdir()

    # -- files and signals --------------------------------------------------------------------
    def _read(self, controller: str, name: str) -> str | None:
        try:
            with open(self.paths[controller] / name) as fh:
                return fh.read()
        except (OSError, KeyError):
            return None

    def _write(self, controller: str, name: str, value: object) -> None:
        with open(self.paths[controller] / name, "w") as fh:
            fh.write(str(value))

    def _signal_group(self, sig: int) -> None:
        # A group id names our processes only while one of them lives: check before signalling.
        if self.group > 0 and group_members(self.group, first=True):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.group, sig)


def group_members(group: int, *, first: bool = False) -> list[int]:
    """Processes of this user whose process group is ``group`` (a scan of /proc)."""
    found: list[int] = []
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        if os.getpgid(group) == group:  # the group leader is alive: the common case
            found.append(group)
            if first:
                return found
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == group:
            continue
        try:  # (a sandbox worker's /proc files belong to root: it is not dumpable)
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != b"Z":
            found.append(int(name))
            if first:
                break
    return found
