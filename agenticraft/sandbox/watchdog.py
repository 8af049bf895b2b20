"""Limits a worker cannot be trusted to enforce on itself, measured from outside: RSS against
memory_mb, process count against max_processes, scratch size, and the CPU share (duty-cycle
throttling with SIGSTOP/SIGCONT). Usage is read from /proc here, never taken from the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from agenticraft.jail.tree import descendants, kill_tree
from agenticraft.sandbox.unit import INTERACTIVE_SECONDS, Unit
from agenticraft.wire.errors import QUOTA_FACTOR
from agenticraft.wire.limits import ResourceLimits

MB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def read_usage(pid: int) -> tuple[float, float]:
    """(cpu seconds including reaped children, resident MB now) of one process, from one read
    of /proc/<pid>/stat; the watchdog keeps the peak over the run."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return parse_stat(fh.read())
    except OSError:
        return 0.0, 0.0


def parse_stat(stat: bytes) -> tuple[float, float]:
    """(cpu seconds including reaped children, resident MB) from a /proc/<pid>/stat line."""
    try:
        fields = stat.rsplit(b")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLK_TCK
        return cpu, int(fields[21]) * PAGE / MB
    except (IndexError, ValueError):
        return 0.0, 0.0


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def dir_size(path: str) -> int:
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            continue
    return total



class Watchdog:
    """Polls a process tree: RSS against memory_mb, process count against max_processes,
    scratch size, and CPU share (duty-cycle throttling with SIGSTOP/SIGCONT).

    ``check`` is one poll; ``watch`` polls while code runs, ``IdleWatch`` between the runs of a
    session (background threads and processes obey the same limits).
    """

    WINDOW = 2.0  # seconds over which cpu_percent is averaged

    def __init__(self, runner: int, limits: ResourceLimits, scratch: str,
                 spare: tuple[int, ...] = (), unit: Unit | None = None,
                 priority: Unit | None = None, begun: float | None = None) -> None:
        self.runner = runner
        self.unit = unit  # a session: its whole unit is watched, stopped and measured
        #: the unit whose CPU priority drops once the run is INTERACTIVE_SECONDS old
        self.priority = priority
        self.begun = time.monotonic() if begun is None else begun
        self.limits = limits
        self.scratch = scratch
        self.spare = set(spare)
        self.peak_rss = 0
        self.tick = 0
        self.tree = [runner]
        self.cpu_share = limits.cpu_percent / 100.0
        # A cgroup cpu quota enforces the share in the kernel; a memory cgroup bounds memory.
        self.throttle = self.cpu_share < (os.cpu_count() or 1) and not (unit and unit.cpu)
        # (the RSS watch stays on when the cgroup refused a limit tighter than its usage)
        self.rss_watch = not (unit and unit.memory and unit.memory_limited)
        self.oom_base = unit.oom_kills() if unit is not None and unit.memory else 0
        self._window: tuple[float, float] | None = None  # (start time, cpu used then)

    def _tree(self) -> list[int]:
        if self.unit is not None:
            return self.unit.members()
        if self.runner <= 0:
            return []
        return [self.runner, *descendants(self.runner)]

    def check(self) -> tuple[tuple[str, Any, Any] | None, float]:
        """One poll: (violation or None, seconds to pause the tree for the CPU share)."""
        limits = self.limits
        self.tick += 1
        if self.priority is not None and self.priority.interactive and (
                time.monotonic() - self.begun > INTERACTIVE_SECONDS):
            self.priority.set_interactive(False)
        if self.tick % 4 == 1:
            self.tree = [p for p in self._tree() if p not in self.spare]
            if len(self.tree) > limits.max_processes:
                return ("max_processes", len(self.tree), limits.max_processes), 0.0
        if not self.rss_watch:
            oom = self.oom_violation()
            if oom is not None:
                return oom, 0.0
        else:
            rss = sum(rss_bytes(pid) for pid in self.tree)
            self.peak_rss = max(self.peak_rss, rss)
            if rss > limits.memory_mb * MB:
                return ("memory_mb", round(rss / MB, 1), limits.memory_mb), 0.0
        if self.tick % 20 == 0:
            used_bytes = dir_size(self.scratch)
            if used_bytes > limits.max_file_size_mb * MB * QUOTA_FACTOR:
                return ("max_file_size_mb", f"{used_bytes // MB} MB in scratch",
                        f"{limits.max_file_size_mb} MB per file, "
                        f"{limits.max_file_size_mb * QUOTA_FACTOR} MB in total"), 0.0
        if not self.throttle:
            return None, 0.0
        now = time.monotonic()
        # CPU counts every process of the unit, the checkpoint (and its threads) included.
        cpu_pids = self.tree if self.unit is None else [*self.tree, *self.spare]
        used = sum(read_usage(pid)[0] for pid in set(cpu_pids))
        if self._window is None or now - self._window[0] > self.WINDOW:
            self._window = (now, used)
            return None, 0.0
        start, base = self._window
        excess = (used - base) - self.cpu_share * (now - start) - 0.05
        return None, (excess / self.cpu_share if excess > 0 else 0.0)

    def oom_violation(self) -> tuple[str, Any, Any] | None:
        """memory_mb, when the kernel's OOM killer took a process of the unit since the watch
        began (the kernel stopped the unit at its limit)."""
        if self.unit is None or not self.unit.memory or self.unit.oom_kills() <= self.oom_base:
            return None
        peak = self.unit.memory_peak_mb()
        return ("memory_mb", None if peak is None else round(peak, 1), self.limits.memory_mb)

    async def watch(self) -> tuple[str, Any, Any]:
        interval = 0.005
        while True:
            await asyncio.sleep(interval)
            interval = min(interval * 2, 0.05)
            violation, pause = self.check()
            if violation is not None:
                return violation
            if pause:
                self.signal_tree(signal.SIGSTOP)
                try:
                    await asyncio.sleep(pause)
                finally:
                    self.signal_tree(signal.SIGCONT)

    def signal_tree(self, sig: int) -> None:
        """Stop or resume what is watched: a unit at once (no member can wake another)."""
        if self.unit is not None:
            (self.unit.stop if sig == signal.SIGSTOP else self.unit.resume)()
            return
        for pid in self.tree:
            if pid > 0:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)


class IdleWatch:
    """Enforces a session's limits between runs, from a thread (independent of event loops).

    A cell may leave threads or processes running; they get the same CPU share and memory cap.
    Over a cap, the session is killed (there is no checkpoint between runs) and ``on_violation``
    is called with the violation. One thread serves a session's whole life, and :meth:`pause`
    before a run and :meth:`resume` after it do not wake it: it polls ``INTERVAL`` after the
    resume, finding the new watch when its timed wait ends (a wake-up of another thread is
    ~0.1 ms of the caller's time here, with the GIL handed back and forth, and a run paused and
    resumed it four times); only a thread waiting without a watch, or holding the tree stopped
    for the CPU share, is woken.
    """

    INTERVAL = 0.25
    #: The longest pause between looks while nothing runs: the kernel enforces memory, pids
    #: and the scratch size in a unit, so a later look only reports (RSS watch: sooner).
    QUIET_INTERVAL = 2.0
    QUIET_INTERVAL_RSS = 1.0
    #: Share of a CPU that background work between runs may use and stay interactive (a
    #: prefork after a run, a widget's thread); more makes the unit yield (``set_interactive``).
    BACKGROUND_CPU = 0.2

    def __init__(self, holder: int, limits: ResourceLimits, scratch: str,
                 on_violation: Callable[[tuple[str, Any, Any]], Any],
                 unit: Unit | None = None, spare: tuple[int, ...] = ()) -> None:
        self.on_violation = on_violation
        self.watchdog: Watchdog | None = None  # None while paused
        self._cond = threading.Condition()  # held while a poll runs: pause() waits for it
        self._closed = False
        self._fired = False
        self._stopped = False  # the tree is stopped (SIGSTOP) for the CPU share right now
        self._due = 0.0  # when the watch polls next (monotonic)
        self._unwatched = False  # the thread waits without a timeout (no watch): wake it
        self.resume(holder, limits, scratch, unit=unit, spare=spare)
        self._thread = threading.Thread(target=self._loop, name="agenticraft-idle-watch",
                                        daemon=True)
        self._thread.start()

    def resume(self, holder: int, limits: ResourceLimits, scratch: str,
               unit: Unit | None = None, spare: tuple[int, ...] = ()) -> None:
        """Watch again (after a run): ``spare`` are the sandbox's own processes (keeper, init,
        a kept undo state), not counted as the session's. The first poll is ``INTERVAL``
        from now."""
        watchdog = Watchdog(holder, limits, scratch, unit=unit, spare=spare)
        with self._cond:
            self.watchdog = watchdog
            self._due = time.monotonic() + self.INTERVAL
            self._fired = False
            if self._unwatched:
                self._cond.notify_all()

    def _loop(self) -> None:
        interval, seen, last_cpu = self.INTERVAL, None, None
        with self._cond:
            while not self._closed:
                watching = self.watchdog
                if watching is None:
                    self._unwatched = True
                    self._cond.wait()
                    self._unwatched = False
                    continue
                if watching is not seen:  # a new watch (after a run): look closely again
                    interval, seen, last_cpu = self.INTERVAL, watching, None
                remaining = self._due - time.monotonic()
                if remaining > 0:  # (paused, resumed or closed meanwhile: seen at the top)
                    self._cond.wait(remaining)
                    continue
                # Nothing of the session ran since the last look (its unit's CPU time did
                # not move): no limit can have been crossed, so the look is skipped and the
                # next comes later. An idle kernel then costs a wake-up every few seconds,
                # not a full poll four times a second (hundreds of kernels on one host).
                cpu = watching.unit.cpu_seconds() if watching.unit is not None else None
                if cpu is not None and cpu == last_cpu:
                    interval = min(interval * 2, self.QUIET_INTERVAL if not watching.rss_watch
                                   else self.QUIET_INTERVAL_RSS)
                    self._due = time.monotonic() + interval
                    continue
                if (cpu is not None and last_cpu is not None and watching.unit is not None
                        and cpu - last_cpu > self.BACKGROUND_CPU * interval):
                    watching.unit.set_interactive(False)  # busy background work
                interval, last_cpu = self.INTERVAL, cpu
                self._due = time.monotonic() + interval
                violation, pause = watching.check()
                if violation is not None:
                    self._fire(watching, violation)
                    self.watchdog = None
                    continue
                if pause:
                    self._stopped = True
                    watching.signal_tree(signal.SIGSTOP)
                    try:
                        self._cond.wait(pause)
                    finally:
                        watching.signal_tree(signal.SIGCONT)
                        self._stopped = False
                        self._due = time.monotonic() + self.INTERVAL  # it runs that long
                        self._cond.notify_all()  # a pause() waits for this

    def pause(self) -> None:
        """Stop watching (before the next run, which has its own watchdog), with one last
        look: a kernel OOM kill since the last poll is not missed (or, where the unit's
        memory limit was refused, the resident size). A poll under way ends first (it holds
        the condition); a tree stopped for the CPU share is resumed first."""
        with self._cond:
            watchdog, self.watchdog = self.watchdog, None
            if self._stopped:  # never leave the session stopped for the CPU share
                self._cond.notify_all()
                while self._stopped:
                    self._cond.wait()
            if watchdog is None or self._fired:
                return
            if watchdog.unit is not None and watchdog.unit.memory:
                violation = (watchdog.check()[0] if watchdog.rss_watch
                             else watchdog.oom_violation())
                if violation is not None:
                    self._fire(watchdog, violation)

    def stop(self) -> None:
        """Stop watching for good (the session ends): ``pause`` and end the thread."""
        self.pause()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _fire(self, watchdog: Watchdog, violation: tuple[str, Any, Any]) -> None:
        self._fired = True
        kill_tree(watchdog.runner)
        if watchdog.unit is not None:
            watchdog.unit.kill()
        self.on_violation(violation)
