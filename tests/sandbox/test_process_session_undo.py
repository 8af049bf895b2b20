"""``ProcessSession(undo=True)``: the session keeps the state from before its last run (the
checkpoint that run forked from, stopped) and ``undo()`` goes back to it, once."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from agenticraft.security import SecurityContext
from agenticraft.wire.errors import NothingToUndo, ResourceLimitExceeded, SandboxError

from helpers import audit_records, name_me, named, wait_gone, wait_named_gone

pytestmark = pytest.mark.timeout(120)

MB = 1024 * 1024


def states(pid: int) -> set[str]:
    """The state letters of the process's threads in /proc (T: stopped)."""
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as fh:
            found.add(fh.read().rsplit(")", 1)[1].split()[0])
    return found


def stopped(pid: int, timeout: float = 5.0) -> bool:
    """Wait until every thread of ``pid`` is stopped (SIGSTOP takes effect asynchronously)."""
    deadline = time.monotonic() + timeout
    while states(pid) != {"T"}:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
async def session(process_sandbox):
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 5, "memory_mb": 256})
    async with process_sandbox.session(ctx, undo=True) as session:
        yield session


SETUP = ("import numpy as np\na = 1\nb = 'kept'\nc = [3, 1]\nd = {'k': 'v'}\n"
         "arr = np.arange(5)\n")
CHANGE = "a = 2\ndel b\nc.append(0)\nd['k'] = 'changed'\nd['new'] = 1\narr[0] = 99\narr *= 2\n"
STATE = "state = [a, 'b' in globals(), c, sorted(d.items()), arr.tolist()]"
BEFORE = [1, True, [3, 1], [["k", "v"]], [0, 1, 2, 3, 4]]


async def test_undo_restores_rebound_deleted_and_mutated_variables(session):
    await session.run(SETUP)
    await session.run(CHANGE)
    await session.undo()
    assert (await session.run(STATE))["state"] == BEFORE


async def test_undo_takes_back_only_the_last_run(session):
    await session.run(SETUP)
    await session.run(CHANGE)
    await session.run("a = 3")
    await session.undo()
    assert (await session.run(STATE))["state"][0] == 2


async def test_a_second_undo_in_a_row_is_refused_and_both_are_audited(session, process_sandbox):
    await session.run("x = 1")
    await session.run("x = 2")
    await session.undo()
    with pytest.raises(NothingToUndo, match="already undone"):
        await session.undo()
    assert (await session.run("y = x"))["y"] == 1  # the refusal changed nothing
    outcomes = [r["outcome"] for r in audit_records(process_sandbox.manager, "session",
                                                    event="undo")][-2:]
    assert outcomes == ["restored", "refused"]


async def test_runs_after_an_undo_work_and_can_be_undone(session):
    await session.run("x = 1")
    await session.run("x = 2")
    await session.undo()
    await session.run("x = x + 10")
    assert (await session.run("y = x"))["y"] == 11
    await session.run("x = 'third'")
    await session.undo()
    assert (await session.run("z = x"))["z"] == 11


async def test_undo_before_any_run_is_refused(session):
    with pytest.raises(NothingToUndo, match="no run has finished"):
        await session.undo()


async def test_sessions_keep_no_undo_state_unless_asked(process_sandbox):
    async with process_sandbox.session(SecurityContext("student")) as plain:
        await plain.run("x = 1")
        await plain.run("x = 2")
        assert not plain.can_undo
        with pytest.raises(NothingToUndo, match="undo=True"):
            await plain.undo()


async def test_a_rolled_back_run_does_not_count(session):
    """A run killed for a limit changed nothing: undo then takes back the run before it."""
    await session.run("z = 1")
    await session.run("z = 2")
    with pytest.raises(ResourceLimitExceeded) as info:
        await session.run("z = 3\nwhile True:\n    pass")
    assert info.value.rolled_back
    assert (await session.request("w = z", undoable=False)).reply["w"] == 2
    await session.undo()
    assert (await session.run("w = z"))["w"] == 1


async def test_requests_that_are_not_undoable_keep_the_undo_state(session):
    await session.run("y = 'before'")
    await session.run("y = 'after'")
    reply = await session.request("side = 'effect'", undoable=False)  # e.g. a comm message
    assert reply.success
    assert (await session.request("v = (y, side)", undoable=False)).reply["v"] == [
        "after", "effect"]
    await session.undo()
    assert (await session.run("v = (y, 'side' in globals())"))["v"] == ["before", False]


async def test_the_kept_state_is_stopped_and_one_at_a_time(session):
    assert not session.can_undo
    kept = []
    for i in range(4):
        await session.run(f"x = {i}")
        kept.append(session.handle.undo)
        assert stopped(kept[-1]), "the undo state must be stopped"
        assert kept[-1] in session.handle.unit.members()  # accounted in the session's unit
    assert all(wait_gone(pid) for pid in kept[:-1]), "older undo states must end"
    last = kept[-1]
    await session.close()
    assert wait_gone(last), "the undo state outlived session.close()"


#: Sandbox code: the states of the processes of its own session (the worker called setsid(),
#: and every process of the sandbox keeps that session id), as /proc shows them inside.
MINE = """\
import os
def _mine():
    sid, found = os.getsid(0), []
    for p in os.listdir('/proc'):
        if p.isdigit():
            try:
                with open(f'/proc/{p}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                found.append(fields[0])
    return sorted(found)
"""


async def test_a_run_starts_only_once_the_undo_state_it_replaced_is_gone(process_sandbox):
    """A kept run kills the undo state it replaces; the next run must not start while that
    process still exists (exiting, or a zombie not reaped yet): it would hold a pid (pids.max,
    RLIMIT_NPROC) and memory of the unit. Runs back to back, each state holding 150 MB (a
    slower exit), must see no more processes of their session than a run long after the
    last (state letters may differ: a checkpoint may still be on its way into its wait)."""
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 10, "memory_mb": 512})
    async with process_sandbox.session(ctx, undo=True) as session:
        await session.run(MINE + "big = b'x' * (150 * 1024 * 1024)")
        await session.run("x = 0")
        time.sleep(0.3)  # (the state replaced by that run is long gone)
        alone = (await session.run("seen = _mine()"))["seen"]
        seen = [(await session.run(f"x = {i}\nseen = _mine()"))["seen"] for i in range(15)]
        extra = [states for states in seen if len(states) > len(alone)]
        assert extra == [], f"a run started beside a replaced state (alone: {alone})"


THREAD = """\
import threading, time
ticks = [0]
def count():
    while True:
        ticks[0] += 1
        time.sleep(0.001)
threading.Thread(target=count, daemon=True).start()
while not ticks[0]:  # it runs
    time.sleep(0.001)
"""


async def test_threads_of_the_kept_state_are_stopped_and_resume_after_undo(session):
    """A thread the state had when it was kept is stopped with it (no CPU, no changes while
    kept) and runs again after undo. (A runner never has the threads: they do not survive the
    fork of each run; they live in the state a run forked from.)"""
    await session.run(THREAD)  # the live state has a ticking thread
    n0 = (await session.run("n0 = ticks[0]"))["n0"]  # that state is kept now
    kept = session.handle.undo
    assert len(os.listdir(f"/proc/{kept}/task")) == 2
    assert stopped(kept), "a thread of the undo state runs"
    await session.undo()
    deadline = time.monotonic() + 5  # each run sees the restored state's count as it forks
    while (n1 := (await session.run("n1 = ticks[0]"))["n1"]) <= n0:
        assert time.monotonic() < deadline, "the restored state's thread did not run again"
    assert n1 > n0


async def test_undo_kills_what_the_undone_run_started(session):
    await session.run("x = 1")
    code = ("import subprocess, sys\n"
            "p = subprocess.Popen([sys.executable, '-c', "
            + repr(name_me("undochild") + "print('named', flush=True)\nimport time\n"
                   "time.sleep(60)") + "], stdout=subprocess.PIPE)\n"
            "p.stdout.readline()  # it has its name now\nx = 2\n")
    await session.run(code)
    assert named("undochild")
    await session.undo()
    assert wait_named_gone("undochild")
    assert (await session.run("y = x"))["y"] == 1


async def test_state_lost_with_the_session_says_so(session):
    await session.run("x = 1")
    await session.run("x = 2")
    kept = session.handle.undo
    session.handle.unit.kill()  # every process of the session dies: nothing to roll back to
    with contextlib.suppress(SandboxError, OSError):  # (its channel may be closed already)
        result = await session.run("x = 3")
        assert not result.success
    assert wait_gone(kept)
    with pytest.raises(NothingToUndo, match="replaced"):
        await session.undo()
    assert (await session.run("y = 'fresh'"))["y"] == "fresh"


async def test_a_killed_undo_state_is_reported_and_the_session_lives_on(session):
    await session.run("x = 1")
    await session.run("x = 2")
    kept = session.handle.undo
    os.kill(kept, signal.SIGKILL)  # e.g. the OOM killer
    assert wait_gone(kept)
    with pytest.raises(NothingToUndo, match="was killed"):
        await session.undo()
    assert (await session.run("y = x"))["y"] == 2


async def test_the_kept_state_counts_in_the_unit_or_cannot_grow(session):
    """With a memory cgroup, the pages the live state changed since the kept one count
    against memory_mb: after mutating 64 MB in place, the unit holds both copies. Without one
    (unprivileged), memory_mb is the RSS watch of the live state, and the kept state, which it
    does not count, is stopped: it holds what it held and cannot grow (as doctor says)."""
    unit = session.handle.unit
    await session.run("import numpy as np\nbig = np.ones(64 * 1024 * 1024 // 8)")
    await session.run("x = 1")
    base = unit.memory_bytes() if unit.memory else 0
    await session.run("big += 1")
    if unit.memory:
        both = unit.memory_bytes()
        assert both - base > 48 * MB, (base / MB, both / MB)
    else:  # the live state changes and allocates; the kept one holds still
        kept = session.handle.undo
        held = resident(kept)
        grow = "big += 1\nmore = np.ones(32 * 1024 * 1024 // 8)"
        assert (await session.request(grow, undoable=False)).success
        assert session.handle.undo == kept and stopped(kept, timeout=0.5)
        assert resident(kept) <= held + MB, (held / MB, resident(kept) / MB)
    await session.undo()
    assert (await session.run("v = float(big[0])"))["v"] == 1.0


def resident(pid: int) -> int:
    """Resident bytes of ``pid`` (from /proc/<pid>/statm, readable without privileges)."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_the_kept_state_stays_stopped_while_the_unit_is_throttled(process_sandbox):
    """Throttling stops and resumes the whole unit (the freezer, or SIGSTOP/SIGCONT to the
    process group): the kept state is left stopped, even when its runner is gone (a request
    that is not undoable ends the checkpoint it ran from, the kept state's child)."""
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 10, "cpu_percent": 20})
    async with process_sandbox.session(ctx, undo=True) as session:
        await session.run("x = 1")
        await session.run("x = 2")
        kept = session.handle.undo
        spin = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end:\n    pass"
        assert (await session.request(spin, undoable=False)).success
        assert session.handle.undo == kept
        assert stopped(kept, timeout=0.5), "throttling woke the undo state"
        await session.undo()
        assert (await session.run("y = x"))["y"] == 1


async def test_the_kept_state_does_not_take_a_process_from_max_processes(process_sandbox):
    """The kept state is the sandbox's own process: a session with an undo state allows the
    runs as many processes as one without (pids.max and RLIMIT_NPROC reserve its slot). With
    max_processes=3 a run may start a child (RLIMIT_NPROC, unprivileged, also counts the
    checkpoint among the three)."""
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 10, "max_processes": 3})
    async with process_sandbox.session(ctx, undo=True) as session:
        await session.run("x = 1")
        await session.run("x = 2")
        assert session.can_undo
        child = ("import subprocess, sys\n"
                 "out = subprocess.run([sys.executable, '-c', 'print(7)'], capture_output=True,"
                 " text=True).stdout.strip()")
        result = await session.run(child)
        assert result.success, result.error
        assert result["out"] == "7"
        await session.undo()
        assert (await session.run("y = x"))["y"] == 2


async def test_requests_between_runs_leave_no_processes_behind(process_sandbox):
    """Each request that is not undoable (a completion) ends the checkpoint it ran from, the
    kept state's child; the processes orphaned so must not pile up under the stopped kept
    state (as zombies it cannot reap) until they exhaust max_processes."""
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 10, "max_processes": 6})
    async with process_sandbox.session(ctx, undo=True) as session:
        await session.run("x = 1")
        await session.run("x = 2")
        for i in range(12):
            assert (await session.request(f"completion = {i}", undoable=False)).success
        assert (await session.run("y = x"))["y"] == 2
        await session.undo()
        assert (await session.run("z = (x, 'completion' in globals())"))["z"] == [2, True]
