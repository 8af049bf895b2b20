"""What each step of a process-sandbox execution costs (issue 11's latency goals).

    python benchmarks/bench_confine.py [--n 60]

1. Confinement, step by step, inside real workers of a real zygote (started by this script with
   timers around each ``jail.confine`` step; see ``_timing.install_confine_timers``): a fresh
   fork, and a blank child (forked and placed in its cgroup unit ahead of time).
2. The host's phases of one pre-forked execution with a ready worker (``ProcessSandbox.run``:
   spawn, run, release, and the calls inside them), 30 ms apart so the pool is refilled.
3. What a fork of a Python process costs here (the floor of every fresh start).

Timers wrap the functions only in this process and in the zygote this script starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt, print_table, row
from _timing import CONFINE_STEPS, Timers, parse_confine_timers
from agenticraft.sandbox import SandboxManager, process, supervisor, unit, workers
from agenticraft.security import SecurityContext
from agenticraft.security.config import Settings
from agenticraft.security.policy import Policy

BENCH_DIR = str(Path(__file__).resolve().parent)
CODE = "result = sum([1, 2, 3, 4, 5])"
ZYGOTE_CODE = ("import sys; sys.path.insert(0, sys.argv.pop(1)); sys.path.insert(0, {bench!r}); "
               "import _timing; _timing.install_confine_timers(); "
               "from agenticraft.jail.zygote import main; main()")


def _timed_zygote_popen(real: Any) -> Any:
    """``subprocess.Popen`` that starts the zygote with the confinement timers installed."""
    def popen(args: Any, *rest: Any, **kwargs: Any) -> Any:
        if isinstance(args, list) and len(args) > 3 and "jail.zygote import main" in args[3]:
            args = [*args[:3], ZYGOTE_CODE.format(bench=BENCH_DIR), *args[4:]]
        return real(args, *rest, **kwargs)
    return popen


async def confine_steps(n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    real = subprocess.Popen
    subprocess.Popen = _timed_zygote_popen(real)  # type: ignore[misc]
    try:
        manager = SandboxManager(policy=Policy(), settings=Settings(audit_log_path=tmp / "a"),
                                 audit_log=tmp / "audit.jsonl")
        sandbox = await manager.get_sandbox("process")
    finally:
        subprocess.Popen = real  # type: ignore[misc]
    ctx = manager.authorize(SecurityContext("bench"), "execute", sandbox_type="process")
    profile = sandbox.profile_for(ctx)
    sup = sandbox.supervisor
    steps: dict[str, dict[str, list[float]]] = {"fresh": {}, "blank": {}}
    spawn: dict[str, list[float]] = {"fresh": [], "blank": []}
    for _ in range(n):
        for kind, pool in (("fresh", False), ("blank", True)):
            await asyncio.sleep(0.03)  # the blank is refilled in between
            start = time.perf_counter()
            handle = await sup.spawn(profile, prefork=False, pool=pool)
            spawn[kind].append(time.perf_counter() - start)
            outcome = await sup.run(handle, CODE, ctx.resource_limits)
            sup.release(handle)
            timings = parse_confine_timers(outcome.stderr)
            if timings is None:
                raise SystemExit(f"no timings from the worker: {outcome.stderr!r}")
            for label, seconds in timings["steps"]:
                steps[kind].setdefault(label, []).append(seconds)
            steps[kind].setdefault("confine() in all", []).append(timings["total"])
    rows = []
    labels = [label for _m, _n, label in CONFINE_STEPS] + ["confine() in all"]
    for label in labels:
        fresh, blank = steps["fresh"].get(label), steps["blank"].get(label)
        if fresh or blank:
            rows.append((label, fmt(statistics.median(fresh)) if fresh else "-",
                         fmt(statistics.median(blank)) if blank else "-"))
    rows.append(("Supervisor.spawn (request -> ready), host side",
                 fmt(statistics.median(spawn["fresh"])), fmt(statistics.median(spawn["blank"]))))
    print_table(f"Confinement steps inside the worker, p50 of n={n} (load {_load()})", rows,
                header=("step", "fresh fork", "blank child"))
    await manager.close()


async def host_phases(n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    manager = SandboxManager(policy=Policy(), settings=Settings(audit_log_path=tmp / "a"),
                             audit_log=tmp / "audit.jsonl")
    sandbox = await manager.get_sandbox("process")
    ctx = manager.authorize(SecurityContext("bench"), "execute", sandbox_type="process")
    timers = Timers()
    targets = [
        (process.ProcessSandbox, "profile_for", "ProcessSandbox.profile_for"),
        (process.ProcessSandbox, "enforced_for", "ProcessSandbox.enforced_for"),
        (process, "to_result", "to_result"),
        (supervisor.Supervisor, "spawn", "Supervisor.spawn"),
        (workers.ZygoteProcess, "spawn", "  zygote round trip (request, fds back)"),
        (unit.Unit, "for_worker", "  Unit.for_worker"),
        (workers.WorkerHandle, "adopt_pid_namespace", "  adopt_pid_namespace"),
        (supervisor.Supervisor, "run", "Supervisor.run"),
        (supervisor.Supervisor, "run_lean", "Supervisor.run_lean"),
        (workers.WorkerHandle, "watch_pipes", "  watch_pipes"),
        (workers.WorkerHandle, "send_run", "  send_run"),
        (supervisor.Supervisor, "_frame", "  waiting for the worker's frame"),
        (workers.WorkerHandle, "usage", "  WorkerHandle.usage (/proc stat)"),
        (unit.Unit, "cpu_seconds", "  Unit.cpu_seconds (x2)"),
        (unit.Unit, "memory_peak_mb", "  Unit.memory_peak_mb"),
        (unit.Unit, "oom_kills", "  Unit.oom_kills"),
        (supervisor.Supervisor, "_collect_output", "  _collect_output"),
        (supervisor.Supervisor, "_prepare_run", "  _prepare_run (cgroup limit writes)"),
        (supervisor.Supervisor, "release", "Supervisor.release"),
        (workers.WorkerHandle, "close", "  WorkerHandle.close"),
        (workers, "kill_tree", "    kill_tree (walks /proc)"),
        (shutil, "rmtree", "    shutil.rmtree (scratch)"),
        (workers.WorkerHandle, "finish", "  WorkerHandle.finish (deferred, off the path)"),
    ]
    for owner, name, label in targets:
        if hasattr(owner, name):  # this tree may not have it
            timers.patch(owner, name, label)
    for _ in range(3):
        await sandbox.run(CODE, ctx)
    await asyncio.sleep(0.1)
    timers.clear()
    total: list[float] = []
    for _ in range(n):
        await asyncio.sleep(0.03)  # the pool is refilled in between
        start = time.perf_counter()
        result = await sandbox.run(CODE, ctx)
        total.append(time.perf_counter() - start)
        assert result["result"] == 15
    await asyncio.sleep(0.1)
    timers.restore()
    rows = [row("ProcessSandbox.run (spawn + run + release), pool ready", total)]
    rows += [row(label, samples) for _o, _n, label in targets
             if (samples := timers.samples.get(label))]
    print_table(f"Host phases of a pre-forked execution, n={n} (load {_load()})", rows)
    await manager.close()


def fork_costs(n: int) -> None:
    """A fork of this Python process: until it returns in the parent, until the child runs,
    and fork + exit + wait (what each fork step of a fresh start pays at least)."""
    in_parent, to_child, round_trip = [], [], []
    for _ in range(n):
        r, w = os.pipe()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.write(w, repr(time.perf_counter()).encode())
            os._exit(0)
        in_parent.append(time.perf_counter() - start)
        os.close(w)
        child_ran = float(os.read(r, 64))
        os.close(r)
        os.waitpid(pid, 0)
        round_trip.append(time.perf_counter() - start)
        to_child.append(child_ran - start)
    with open("/proc/self/statm") as fh:
        rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
    rows = [row("fork, returned in the parent", in_parent),
            row("fork, child running", to_child),
            row("fork + child exit + waitpid", round_trip)]
    if os.geteuid() == 0:  # (unprivileged it needs a user namespace first)
        rows.append(row("fork + unshare(PID) + fork: running as pid 1 of its own namespace",
                        _pid_namespace_floor(n)))
    print_table(f"fork() of a Python process ({rss} MB resident), n={n} (load {_load()})", rows)


def _pid_namespace_floor(n: int) -> list[float]:
    """The floor of a fresh run with a PID namespace of its own: one fork to leave the zygote,
    unshare(CLONE_NEWPID), one fork to be in it (today's worker is a third fork: the init
    stays behind for sessions), timed until that process runs."""
    from agenticraft.jail.confine.libc import CLONE_NEWPID, unshare

    samples = []
    for _ in range(n):
        r, w = os.pipe()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            try:
                unshare(CLONE_NEWPID)
                inner = os.fork()
                if inner == 0:
                    os.write(w, repr(time.perf_counter()).encode())
                    os._exit(0)
                os.waitpid(inner, 0)
            finally:
                os._exit(0)
        os.close(w)
        ran = float(os.read(r, 64))
        os.close(r)
        os.waitpid(pid, 0)
        samples.append(ran - start)
    return samples


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main(n: int, parts: str) -> None:
    print(f"machine: {os.cpu_count()} cpus; uptime load {_load()}")
    if "fork" in parts:
        fork_costs(n)
    if "confine" in parts:
        await confine_steps(n)
    if "host" in parts:
        await host_phases(n)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--parts", default="fork,confine,host")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.parts))
