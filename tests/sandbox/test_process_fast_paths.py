"""The paths that keep work off the caller's path (issue 11's latency goals) keep every
guarantee: a session's next runner forked ahead of time holds the state of the last run; a
thread left running keeps the fork at the start of the run; a one-shot run's worker taken from
the supervisor's pool is one of the live zygote's, and nothing of a run outlives it."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from agenticraft.jail.confine import pidns
from agenticraft.jail.tree import children
from agenticraft.security import SecurityContext

from helpers import make_manager, wait_gone

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def session(process_sandbox):
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 5, "memory_mb": 256})
    async with process_sandbox.session(ctx) as session:
        yield session


def _children_soon(pid: int, timeout: float = 5.0) -> list[int]:
    """The children of ``pid`` once it has one (the runner forks after its reply is sent)."""
    deadline = time.monotonic() + timeout
    while not (found := children(pid)) and time.monotonic() < deadline:
        time.sleep(0.005)
    return found


def _inner(pid: int) -> int | None:
    """The pid the sandbox gives host process ``pid`` (itself without a PID namespace)."""
    return pidns.ns_pid(pid)


async def test_the_next_runner_is_forked_after_a_kept_run_and_runs_it(session):
    await session.run("x = 1")
    handle = session.handle
    assert handle.next_prefork
    waiting = _children_soon(handle.pid)  # the next runner, forked after the reply, waiting
    assert len(waiting) == 1
    result = await session.run("import os\nx += 1\nme = os.getpid()")
    assert result["x"] == 2
    assert result["me"] == _inner(waiting[0])  # that process ran it: no fork on the path
    assert session.handle.pid == waiting[0]  # and is the live session now


async def test_a_preforked_runner_over_a_limit_rolls_back_and_the_session_goes_on(session):
    await session.run("x = 'kept'")
    assert session.handle.next_prefork
    with pytest.raises(Exception) as info:
        await session.run("x = 'lost'\nwhile True:\n    pass", limits=None, grace=0.1)
    assert getattr(info.value, "rolled_back", False), info.value
    assert (await session.run("same = x"))["same"] == "kept"
    assert (await session.run("x = 'next'"))["x"] == "next"


async def test_a_run_in_place_while_a_runner_waits_makes_that_runner_the_live_one(session):
    # A request run unforked (a debugger's) reaches the runner forked ahead of time, which reads
    # the channel: it becomes the live process, and the next cell forks from it as usual.
    await session.run("x = 1")
    assert session.handle.next_prefork
    waiting = _children_soon(session.handle.pid)
    assert len(waiting) == 1
    inner = _inner(waiting[0])
    await session.request("import os\nx += 10\nme = os.getpid()", checkpoint=False)
    assert session.handle.pid == waiting[0]
    result = await session.run("y = x\nagain = me")
    assert result["y"] == 11
    assert result["again"] == inner  # the request ran in the runner forked ahead
    assert (await session.run("z = y + 1"))["z"] == 12


#: Patched into the worker's own class by a cell (its process, its copy): after this cell's
#: reply the next runner is forked 0.3 s late.
SLOW_PREFORK = """\
import sys, time
_worker = sys.modules["agenticraft.jail.worker"].Worker
_fork_ahead = _worker._prefork
def _late(self):
    time.sleep(0.3)
    _fork_ahead(self)
_worker._prefork = _late
x = 1
"""


async def test_a_run_in_place_sent_before_the_runner_is_forked_ahead_finds_it(session):
    # The request comes while the live process has said it forks the next runner but has not
    # yet: the runner then reads it. The supervisor waits for that fork; it once did not, and
    # the next cell failed with "a run finished that no runner started" (the session was lost).
    await session.run(SLOW_PREFORK)
    assert session.handle.next_prefork and not children(session.handle.pid)
    await session.request("import os\nx += 10\nme = os.getpid()", checkpoint=False)
    result = await session.run("y = x\nagain = me")
    assert result["y"] == 11
    assert result["again"] != _inner(session.handle.pid)  # this cell ran in a runner again
    assert (await session.run("z = y + 1"))["z"] == 12


async def test_a_thread_left_running_keeps_the_fork_at_the_start_of_the_run(session):
    # A thread may change the state between runs: the next run must start from the state as it
    # is when the run comes, so no runner is forked ahead of time.
    result = await session.run(
        "import threading, time\nticks = 0\nfirst = threading.Event()\n"
        "def tick():\n    global ticks\n    while True:\n        ticks += 1\n"
        "        first.set()\n        time.sleep(0.002)\n"
        "threading.Thread(target=tick, daemon=True).start()\nfirst.wait()\nat_end = ticks")
    assert not session.handle.next_prefork
    await asyncio.sleep(0.1)  # time passing between runs is what this test is about
    seen = (await session.run("seen = ticks"))["seen"]
    assert seen > result["at_end"]


async def test_a_pooled_worker_of_a_dead_zygote_is_never_used(process_sandbox):
    ctx = process_sandbox.manager.authorize(SecurityContext("student"), "execute",
                                            sandbox_type="process")
    supervisor = process_sandbox.supervisor
    assert (await process_sandbox.run("a = 1", ctx))["a"] == 1
    await asyncio.gather(*supervisor._refills)  # the pool holds the next worker now
    assert supervisor._pool
    zygote = supervisor.zygote.pid
    os.kill(zygote, signal.SIGKILL)
    assert wait_gone(zygote)
    supervisor.zygote.proc.wait()
    assert (await process_sandbox.run("b = 2", ctx))["b"] == 2
    assert supervisor.zygote.pid != zygote


async def test_a_one_shot_run_ends_its_sandbox_before_the_result_is_returned(process_sandbox):
    ctx = process_sandbox.manager.authorize(SecurityContext("student"), "execute",
                                            sandbox_type="process")
    supervisor = process_sandbox.supervisor
    seen = []
    release = supervisor.release

    def spy(handle):
        release(handle)
        seen.extend(p for p in (handle.keeper, handle.init, handle.pid) if p is not None)

    supervisor.release = spy
    try:
        await process_sandbox.run("x = 1", ctx)
    finally:
        del supervisor.release
    # With a PID namespace the keeper got SIGKILL before the result came back, and the init and
    # the worker die with it; without one the worker was told to exit.
    assert seen
    for pid in seen:
        assert wait_gone(pid, timeout=5)


async def test_a_refill_pending_when_the_sandbox_closes_starts_no_zygote(tmp_path):
    """A pre-forked worker is replaced in the background after its run. A sandbox closed
    before that refill ran must stay closed: the refill restarted the zygote (in the container
    sandbox, a whole new container) and nothing would ever close it."""
    from agenticraft.sandbox.process import ProcessSandbox

    sandbox = ProcessSandbox(make_manager(tmp_path))
    await sandbox.start()
    ctx = sandbox.manager.authorize(SecurityContext("student"), "execute",
                                    sandbox_type="process")
    supervisor = sandbox.supervisor
    handle = await supervisor.spawn(sandbox.profile_for(ctx), prefork=True)
    supervisor.release(handle)  # its replacement is made in the background ...
    refills = list(supervisor._refills)
    assert refills
    zygote = supervisor.zygote.pid
    await sandbox.close()  # ... and the sandbox closes before that began
    await asyncio.gather(*refills, return_exceptions=True)
    assert supervisor.zygote.proc is None, "a closed sandbox's zygote was started again"
    assert not supervisor._pool
    assert wait_gone(zygote)
