"""A worker's accounting unit as the supervisor holds it: everything a session (or a one-shot
run) ever started, measured, frozen and killed as one, never as a polled snapshot of a tree.

Backed by the worker's cgroups where the host has them (``jail.confine.cgroups``: v1 memory,
cpu, cpuacct, pids, freezer as root; a delegated v2 subtree for an unprivileged user, with
whatever controllers it offers and the v2 core's freeze, kill and CPU time), and otherwise by
its process group: the worker called ``setsid()`` and
seccomp denies ``setsid``/``setpgid`` to the code inside, so every process it starts stays in
that group, including those re-parented to the zygote when their parent died. A process group
is stopped and resumed atomically by ``killpg`` (no child can wake a throttled sibling between
two signals); its members are found by a scan of /proc, done only to kill or to measure.

A session may keep one process stopped on purpose (its undo state, see ``Supervisor``): the unit
holds it, so resuming the unit never wakes it (the freezer leaves a SIGSTOPped process stopped;
without the freezer the group is resumed process by process, the held one left out).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agenticraft.jail.confine import cgroups
from agenticraft.jail.confine.apply import unit_layout

MB = 1024 * 1024
#: A run this old is no longer interactive: its unit yields the CPU to interactive work
#: (:meth:`Unit.set_interactive`) until its session's next run.
INTERACTIVE_SECONDS = 1.0
#: How long a run waits for a process its session ended to be reaped (``Unit.settle``), how
#: often that last step (exit to reap) is looked at, and for how long with the loop held.
SETTLE_TIMEOUT = 2.0
REAP_POLL = 0.00005
REAP_SPIN = 0.005
#: Counters read again with ``pread`` at offset 0 on a kept descriptor (each read makes the
#: value anew). Never ``cgroup.procs``: v1 caches its pid list in the open file.
KEPT_OPEN = frozenset({"cpuacct.usage", "memory.max_usage_in_bytes", "memory.usage_in_bytes",
                       "memory.oom_control", "cpu.stat", "memory.events", "memory.current"})
#: Of those, written too (before every run of a session: its peak starts again), with ``pwrite``
#: on the same descriptor (each write is handled whole; ~1 us instead of ~40 us for an open).
KEPT_WRITTEN = frozenset({"memory.max_usage_in_bytes"})


class Unit:
    """The processes of one worker (a session or a one-shot run), as one object."""

    version = 1

    def __init__(self, group: int, paths: Mapping[str, Path] | None = None,
                 caps: frozenset[str] | None = None) -> None:
        self.group = group  # the worker's process group (= its session id)
        self.paths = dict(paths or {})
        #: what the unit does here: memory, cpu, pids (limits), cpuacct, freezer, kill
        self.caps = frozenset(self.paths) if caps is None else caps
        self._limits: tuple[int, float, int, int] | None = None
        self.memory_limited = self.memory  # False while the cgroup refused this run's limit
        self.held: set[int] = set()  # stopped on purpose: never resumed with the unit
        #: Files read with ``pread`` on descriptors kept open (see :meth:`keep_files_open`)
        self._files: dict[tuple[str, str], int] | None = None
        self.interactive = True  # see set_interactive
        #: Processes killed by :meth:`end` that may still count in the unit: (pid, pidfd or None)
        self._ending: list[tuple[int, int | None]] = []
        weakref.finalize(self, _close_quietly, self.__dict__)

    @classmethod
    def for_worker(cls, mechanisms: Mapping[str, Any], zygote_pid: int, pid: int, *,
                   layout: Any = False) -> Unit:
        """The unit of worker ``pid``: the groups it placed itself in while confining itself
        (decided by the mechanisms, not by anything the worker says). ``layout``: the
        mechanisms' ``unit_layout``, when the caller has it already."""
        if layout is False:
            layout = unit_layout(mechanisms)
        if layout is None:
            return cls(pid)
        paths = layout.paths(f"{zygote_pid}-{pid}")
        if layout.version == 2:
            return CgroupV2Unit(pid, paths, layout.caps)
        return cls(pid, paths, layout.caps)

    # -- what enforces what -----------------------------------------------------------------
    @property
    def memory(self) -> bool:
        return "memory" in self.caps

    @property
    def cpu(self) -> bool:
        return "cpu" in self.caps

    @property
    def freezer(self) -> bool:
        return "freezer" in self.caps

    def set_limits(self, memory_mb: int, cpu_percent: float, max_processes: int,
                   reserved: int = 1) -> None:
        """Apply this run's limits to the unit (a run may tighten the session's); cheap when
        unchanged. ``reserved``: the sandbox's own processes that ``max_processes`` does not
        count (a session's checkpoint, a PID namespace's keeper and init, a kept undo state)."""
        wanted = (memory_mb, cpu_percent, max_processes, reserved)
        if wanted == self._limits or not self.paths:
            return
        self._limits = wanted
        writes = cgroups.limit_writes(self.version, self.caps, memory_mb=memory_mb,
                                      cpu_percent=cpu_percent,
                                      max_processes=max_processes + reserved)
        for controller, name, value in writes:
            if name in ("cpu.cfs_period_us", "memory.swap.max"):
                continue  # set once when the unit was made
            if controller == "memory":
                self.memory_limited = self._set_memory(name, memory_mb)
                if not self.memory_limited:
                    self._limits = None  # try again next time
                continue
            with contextlib.suppress(OSError):
                self._write(controller, name, value)

    def set_interactive(self, interactive: bool) -> bool:
        """Give the unit the CPU like any program (a new cell), or only what interactive work
        leaves free (a cell that has run for a while, a session's background work): the
        cgroup's ``cpu.idle`` (Linux >= 5.15; else the lowest weight). Busy loops then stop
        delaying everybody's short cells, the notebook server and the kernels' own processes,
        yet still use every CPU nobody else wants. Cheap when unchanged; False without a cpu
        controller (nothing is changed then)."""
        if "cpu" not in self.caps or not self.paths:
            return False
        if interactive != self.interactive:
            self.interactive = interactive
            try:
                self._write("cpu", "cpu.idle", 0 if interactive else 1)
            except OSError:  # an older kernel: the smallest weight instead
                with contextlib.suppress(OSError):
                    self._write("cpu", *(("cpu.weight", 100 if interactive else 1)
                                         if self.version == 2
                                         else ("cpu.shares", 1024 if interactive else 2)))
        return True

    def assume_limits(self, memory_mb: int, cpu_percent: float, max_processes: int,
                      reserved: int = 1) -> None:
        """The unit already has these limits (its worker wrote them while confining itself,
        with the same ``cgroups.limit_writes``): ``set_limits`` skips them."""
        if self.paths:
            self._limits = (memory_mb, cpu_percent, max_processes, reserved)

    def _set_memory(self, name: str, memory_mb: int) -> bool:
        try:
            self._write("memory", name, memory_mb * MB)
        except OSError:  # EBUSY: the unit already uses more (a run tightened memory_mb)
            return False
        return True

    # -- members ------------------------------------------------------------------------------
    def members(self) -> list[int]:
        """Every live process of the unit."""
        for controller in ("unified", "freezer", "pids", "memory", "cpuacct", "cpu"):
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

    def end(self, pid: int) -> None:
        """Kill ``pid`` (a session's undo state that a kept run replaced) without waiting for
        its exit here: that exit tears down a copy of the session's memory, and the caller has
        a reply to send. :meth:`settle` waits until it no longer counts in the unit. Through a
        pidfd, opened before the signal: a pid reused meanwhile is never hit nor waited for."""
        try:
            fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError:  # no pidfd here (Linux < 5.3, a seccomp profile): by pid
            fd = None
        try:
            if fd is None:
                os.kill(pid, signal.SIGKILL)
            else:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            if fd is not None:
                os.close(fd)
            return
        self._ending.append((pid, fd))

    async def settle(self, timeout: float = SETTLE_TIMEOUT) -> bool:
        """Until every process :meth:`end` killed is gone, reaped, not only dead: a zombie
        still holds its pid (pids.current and RLIMIT_NPROC count it until its reaper, the PID
        namespace's init or the zygote, waits for it). A session calls this before each run,
        so no run starts beside a state it replaced (between paced runs it is long gone: one
        call). False if one is still there after ``timeout`` (its reaper is stuck)."""
        deadline = time.monotonic() + timeout
        while self._ending:
            pid, fd = self._ending[-1]
            if not await _reaped(pid, fd, deadline):
                return False
            self._ending.pop()
            if fd is not None:
                os.close(fd)
        return True

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
    def _path(self, controller: str) -> Path:
        return self.paths[controller]

    def keep_files_open(self) -> None:
        """Read the unit's files from descriptors kept open from now on (a read is then one
        ``pread``, not a path walk: ~10 us instead of ~40 us). Closed when the unit object
        goes, or by :meth:`close_files`."""
        if self._files is None and self.paths:
            self._files = {}

    def close_files(self) -> None:
        _close_quietly(self.__dict__)

    def _read(self, controller: str, name: str) -> str | None:
        if self._files is not None and name in KEPT_OPEN:
            try:
                return os.pread(self._kept(controller, name), 4096, 0).decode()
            except (OSError, KeyError):
                return None
        try:
            with open(self._path(controller) / name) as fh:
                return fh.read()
        except (OSError, KeyError):
            return None

    def _kept(self, controller: str, name: str) -> int:
        """The kept descriptor of a unit file (opened at its first use)."""
        files = self._files
        assert files is not None
        fd = files.get((controller, name))
        if fd is None:
            mode = os.O_RDWR if name in KEPT_WRITTEN else os.O_RDONLY
            fd = files[controller, name] = os.open(self._path(controller) / name,
                                                   mode | os.O_CLOEXEC)
        return fd

    def _write(self, controller: str, name: str, value: object) -> None:
        if self._files is not None and name in KEPT_WRITTEN:
            try:
                fd = self._kept(controller, name)
            except KeyError as exc:  # (no such controller: as the path-based write would)
                raise FileNotFoundError(name) from exc
            os.pwrite(fd, str(value).encode(), 0)
            return
        with open(self._path(controller) / name, "w") as fh:
            fh.write(str(value))

    def _signal_group(self, sig: int) -> None:
        # A group id names our processes only while one of them lives: check before signalling.
        if self.group > 0 and group_members(self.group, first=True):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.group, sig)


class CgroupV2Unit(Unit):
    """A unit in a delegated cgroup v2 subtree: one directory for every controller, the v2
    core's ``cgroup.freeze``/``cgroup.kill``/``cpu.stat``, and the limits the subtree offers."""

    version = 2

    def __init__(self, group: int, paths: Mapping[str, Path],
                 caps: frozenset[str]) -> None:
        super().__init__(group, paths, caps)
        self.path = Path(paths["unified"])
        self._peak: int | None = None  # memory.peak held open: writing it resets this fd's peak
        self._peak_resettable = False

    def _path(self, controller: str) -> Path:
        return self.path

    def _set_memory(self, name: str, memory_mb: int) -> bool:
        # Lowering memory.max below the usage makes the kernel reclaim and then OOM-kill inside
        # the unit (the session's checkpoint): refuse it like v1's EBUSY, the RSS watch covers.
        if name != "memory.max":
            return True
        current = self.memory_bytes()
        if current is not None and current > memory_mb * MB:
            return False
        return super()._set_memory(name, memory_mb)

    def members(self) -> list[int]:
        text = self._read("unified", "cgroup.procs")
        return [int(p) for p in text.split()] if text is not None else []

    def stop(self) -> None:
        """``cgroup.freeze``: every process of the unit stops at once; wait until the kernel
        says so (``frozen 1`` in cgroup.events, which notifies pollers when it changes)."""
        if not self.freezer:
            return super().stop()
        try:
            self._write("unified", "cgroup.freeze", 1)
        except OSError:  # the group is gone: so are its processes
            return None
        self._wait_events("frozen", 1.0)
        return None

    def resume(self) -> None:
        if not self.freezer:
            return super().resume()
        with contextlib.suppress(OSError):
            self._write("unified", "cgroup.freeze", 0)
        return None

    def kill(self, spare: Iterable[int] = ()) -> int:
        """One write of ``cgroup.kill`` kills every process of the unit (none can fork away in
        between); with processes to spare, the freeze-and-kill of the base class."""
        spared = {p for p in spare if p > 0}
        if spared or "kill" not in self.caps:
            return super().kill(spared)
        victims = len(self.members())
        try:
            self._write("unified", "cgroup.kill", 1)
        except OSError:
            return super().kill()
        return victims

    def wait_empty(self, timeout: float) -> bool:
        """Until the unit holds no process (``populated 0``), at most ``timeout`` seconds."""
        return self._wait_events("populated", timeout, want="0")

    def _wait_events(self, key: str, timeout: float, want: str = "1") -> bool:
        try:
            fd = os.open(self.path / "cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return True  # the group is gone
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI | select.POLLERR)
            deadline = time.monotonic() + timeout
            while True:
                events = dict(line.split() for line in
                              os.pread(fd, 4096, 0).decode().splitlines() if " " in line)
                if events.get(key) == want or (key == "frozen" and events.get("populated")
                                               == "0"):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                poller.poll(remaining * 1000)
        except OSError:
            return True  # removed while we waited: nothing left inside
        finally:
            os.close(fd)

    def memory_bytes(self) -> int | None:
        text = self._read("unified", "memory.current") if self.memory else None
        return int(text) if text else None

    def memory_peak_mb(self) -> float | None:
        if not self.memory:
            return None
        self._open_peak()
        try:
            text = os.pread(self._peak, 64, 0) if self._peak is not None else b""
        except OSError:
            return None
        return int(text) / MB if text.strip() else None

    def reset_peak(self) -> None:
        """memory.peak of this fd starts again at the current usage (kernel >= 6.12; before,
        the peak since the unit was made)."""
        if not self.memory:
            return
        self._open_peak()
        if self._peak is not None and self._peak_resettable:
            try:
                os.write(self._peak, b"reset\n")
            except OSError:
                self._peak_resettable = False

    def _open_peak(self) -> None:
        if self._peak is not None:
            return
        try:
            self._peak = os.open(self.path / "memory.peak", os.O_RDWR | os.O_CLOEXEC)
            self._peak_resettable = True
        except OSError:
            with contextlib.suppress(OSError):
                self._peak = os.open(self.path / "memory.peak", os.O_RDONLY | os.O_CLOEXEC)

    def cpu_seconds(self) -> float | None:
        """CPU time of every process the unit ever held (``cpu.stat``, no controller needed)."""
        text = self._read("unified", "cpu.stat") if "cpuacct" in self.caps else None
        for line in (text or "").splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
        return None

    def oom_kills(self) -> int:
        text = self._read("unified", "memory.events") if self.memory else None
        for line in (text or "").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def remove(self) -> None:
        _close_quietly(self.__dict__)
        with contextlib.suppress(OSError):
            self.path.rmdir()


async def _reaped(pid: int, fd: int | None, deadline: float) -> bool:
    """Wait until ``pid`` (its pidfd ``fd``) is reaped: the pidfd turns readable at the exit;
    the reaper follows within microseconds, so that last step is polled."""
    if fd is not None and not _gone(pid, fd):
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(fd, _set_once, exited)
        try:
            await asyncio.wait_for(exited, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)
    # The reap follows the exit within microseconds once the reaper runs: short sleeps that
    # hold the loop (an asyncio timer sleeps 1 ms at least: epoll's resolution), then timers.
    spin_until = time.monotonic() + REAP_SPIN
    while not _gone(pid, fd):
        now = time.monotonic()
        if now > deadline:
            return False
        if now < spin_until:
            time.sleep(REAP_POLL)
        else:
            await asyncio.sleep(0.001)
    return True


def _gone(pid: int, fd: int | None) -> bool:
    """Reaped (a zombie is not: it still holds its pid)."""
    try:
        if fd is None:
            os.stat(f"/proc/{pid}")
        else:
            signal.pidfd_send_signal(fd, 0)  # (succeeds for a zombie too)
    except (ProcessLookupError, FileNotFoundError):
        return True
    except OSError:  # (EPERM: not ours to wait for)
        return True
    return False


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _close_quietly(state: dict[str, Any]) -> None:
    peak = state.get("_peak")
    state["_peak"] = None
    files = state.get("_files") or {}
    state["_files"] = None
    ending = state.get("_ending") or []
    state["_ending"] = []
    for _, fd in ending:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    for fd in [peak, *files.values()]:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


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
