"""Scenarios run by test_cgroup_v2.py in a child Python that was started INSIDE a delegated
cgroup v2 subtree (as systemd's Delegate=yes leaves it), so that its zygote places workers
there. Each prints one JSON line with what it saw; the test asserts on it.

    python cgroup_v2_scenarios.py SCENARIO WORKDIR
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agenticraft.jail.confine import cgroups
from agenticraft.sandbox import leftovers
from agenticraft.sandbox.host_report import limit_enforcement
from agenticraft.sandbox.process import ProcessSandbox
from agenticraft.sandbox.unit import CgroupV2Unit
from agenticraft.security import SecurityContext
from agenticraft.wire.errors import ResourceLimitExceeded

from helpers import is_gone, make_manager, name_me, named, wait_gone, wait_named_gone

CHILDREN_AND_THREADS = name_me("v2kid") + """\
import os, threading, time
def spin():
    while True:
        time.sleep(0.01)
threads = [threading.Thread(target=spin, daemon=True) for _ in range(3)]
for t in threads:
    t.start()
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        while True:
            time.sleep(0.01)
    kids.append(pid)
n_threads = threading.active_count()
"""

# The unit's files belong to the user the code runs as (v2 delegation): only the private root
# and Landlock keep the code from rewriting its limits or moving itself out.
LEAVE_THE_UNIT = """\
import os
unit = UNIT
tried = {}
for path, value in ((unit + "/cgroup.procs", "0"), (unit + "/cgroup.freeze", "0"),
                    (unit + "/pids.max", "max"), (unit + "/memory.max", "max"),
                    (os.path.dirname(os.path.dirname(unit)) + "/agenticraft-parent/cgroup.procs",
                     "0"), (os.path.dirname(os.path.dirname(unit)) + "/cgroup.procs", "0")):
    try:
        with open(path, "w") as fh:
            fh.write(value)
        tried[path] = "WRITTEN"
    except OSError as exc:
        tried[path] = type(exc).__name__
try:
    os.mkdir(os.path.dirname(unit) + "/escape")
    tried["mkdir"] = "WRITTEN"
except OSError as exc:
    tried["mkdir"] = type(exc).__name__
"""

SPAWN_AND_SPIN = name_me("v2spin") + """\
import os
for _ in range(3):
    if os.fork() == 0:
        break
while True:
    pass
"""


WRITES: list[str] = []  # every control file the supervisor wrote to a v2 unit, in order
_write = CgroupV2Unit._write


def _recording_write(self: CgroupV2Unit, controller: str, name: str, value: object) -> None:
    WRITES.append(f"{name}={value}")
    _write(self, controller, name, value)


CgroupV2Unit._write = _recording_write  # type: ignore[method-assign]


def writes_since(mark: int, name: str) -> int:
    return sum(1 for w in WRITES[mark:] if w.startswith(name + "="))


def cgroup_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return ""


def started(workdir: Path) -> ProcessSandbox:
    sandbox = ProcessSandbox(make_manager(workdir))
    sandbox.supervisor.start()
    sandbox._started = True
    return sandbox


async def placement(workdir: Path) -> dict[str, Any]:
    """A session's children and threads are in its unit; close() kills them all at once."""
    sandbox = started(workdir)
    mech = sandbox.supervisor.mechanisms
    out: dict[str, Any] = {"mechanisms": mech["cgroups"], "pids_cgroup": mech["pids_cgroup"],
                           "enforced": limit_enforcement(mech)}
    out["supervisor_cgroup"] = cgroup_of(os.getpid())
    out["zygote_cgroup"] = cgroup_of(sandbox.supervisor.zygote.pid)
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 10})
    async with sandbox.session(ctx) as session:
        result = await session.run(CHILDREN_AND_THREADS)
        unit = session.handle.unit
        out["unit_class"] = type(unit).__name__
        out["unit_path"] = str(getattr(unit, "path", ""))
        kids = [session.handle.host_pid(int(k)) for k in result["kids"]]
        out["n_threads"] = result["n_threads"]
        members = unit.members()
        out["kids_in_unit"] = all(k in members for k in kids)
        out["kid_cgroups"] = sorted({cgroup_of(k) for k in kids})
        out["runner_threads_in_unit"] = all(
            cgroup_of(int(t)) == cgroup_of(session.pid)
            for t in os.listdir(f"/proc/{session.pid}/task"))
        out["worker_cgroup"] = cgroup_of(session.pid)
        out["members_before_close"] = len(members)
        out["cpu_seconds"] = unit.cpu_seconds()
        escape = await session.run(LEAVE_THE_UNIT.replace("UNIT", repr(str(unit.path))))
        out["escape_attempts"] = escape["tried"]
        out["still_in_unit"] = cgroup_of(session.pid) == out["worker_cgroup"]
        mark = len(WRITES)
    out["kill_writes_at_close"] = writes_since(mark, "cgroup.kill")
    out["kids_gone"] = all(wait_gone(k) for k in kids)
    out["named_gone"] = wait_named_gone("v2kid")
    assert isinstance(unit, CgroupV2Unit)
    out["unit_empty_after_close"] = unit.wait_empty(5.0) and unit.members() == []
    sandbox.supervisor.close()
    deadline = time.monotonic() + 10
    while Path(out["unit_path"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the zygote removes its units as it ends: no event for an rmdir
    out["unit_removed"] = not Path(out["unit_path"]).exists()
    return out


async def timeout(workdir: Path) -> dict[str, Any]:
    """A run's spinning children die with its timeout (one cgroup.kill), not at some poll."""
    sandbox = started(workdir)
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 1.5})
    out: dict[str, Any] = {}
    mark = len(WRITES)
    try:
        await sandbox.run(SPAWN_AND_SPIN, ctx)
        out["raised"] = None
    except ResourceLimitExceeded as exc:
        out["raised"] = exc.limit
    out["spinners_gone"] = wait_named_gone("v2spin")
    out["kill_writes_at_timeout"] = writes_since(mark, "cgroup.kill")
    async with sandbox.session(ctx) as session:
        try:
            await session.run(SPAWN_AND_SPIN)
        except ResourceLimitExceeded as exc:
            out["session_raised"] = exc.limit
        out["session_spinners_gone"] = wait_named_gone("v2spin")
        out["session_alive"] = (await session.run("z = 2"))["z"] == 2
        runner, unit = session.pid, session.handle.unit
    out["session_runner_gone"] = wait_gone(runner)
    out["session_unit_empty"] = unit.wait_empty(5.0)
    sandbox.supervisor.close()
    return out


async def freeze(workdir: Path) -> dict[str, Any]:
    """cgroup.freeze stops every process of the unit at once; the duty-cycle throttle
    (no cpu controller) then bounds children that try to wake a stopped spinner."""
    sandbox = started(workdir)
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 20})
    out: dict[str, Any] = {}
    async with sandbox.session(ctx) as session:
        background = name_me("v2frozen") + (
            "import os, threading\n"
            "def spin():\n    while True:\n        pass\n"
            "for _ in range(2):\n"
            "    if os.fork() == 0:\n        spin()\n"
            "threading.Thread(target=spin, daemon=True).start()\n")
        await session.run(background)
        unit = session.handle.unit
        spinners = named("v2frozen")
        out["spinners"] = len(spinners)

        def cpu() -> float:
            return unit.cpu_seconds() or 0.0

        unit.stop()
        events = (Path(unit.path) / "cgroup.events").read_text()
        out["frozen_flag"] = "frozen 1" in events
        states = {Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
                  for p in spinners if not is_gone(p)}
        out["states_while_frozen"] = sorted(states)
        before = cpu()
        time.sleep(0.5)  # measuring: a frozen unit must not gain CPU time over this span
        out["cpu_while_frozen"] = cpu() - before
        unit.resume()
        before = cpu()
        time.sleep(0.5)  # measuring: a thawed spinner gains CPU time over this span
        out["cpu_after_thaw"] = cpu() - before
    out["all_gone"] = all(wait_gone(p) for p in spinners)
    throttled = SecurityContext("student", resource_limits={"timeout_seconds": 20,
                                                            "cpu_percent": 10})
    from test_resource_control import WAKE_THE_SPINNER
    async with sandbox.session(throttled) as session:
        mark = len(WRITES)
        result = await session.run(WAKE_THE_SPINNER)
        out["freezes_while_throttled"] = writes_since(mark, "cgroup.freeze")
        out["throttled_cpu"] = result["cpu"]
        out["throttled_unit_cpu"] = result.resource_usage.get("cpu_seconds")
    sandbox.supervisor.close()
    return out


async def reap(workdir: Path) -> dict[str, Any]:
    """A unit left behind by a dead zygote is removed by the next sandbox's reaper."""
    info = cgroups.probe_v2()
    base = Path(info["bases"]["unified"])
    base.mkdir(exist_ok=True)
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    stale = base / f"{dead}-12345"
    stale.mkdir()
    removed = leftovers.reap(str(workdir))
    return {"stale_removed": not stale.exists(), "reported": str(stale) in removed}


SCENARIOS = {"placement": placement, "timeout": timeout, "freeze": freeze, "reap": reap}

if __name__ == "__main__":
    name, where = sys.argv[1], Path(sys.argv[2])
    print(json.dumps(asyncio.run(SCENARIOS[name](where))))
