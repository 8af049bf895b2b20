"""The zygote and the worker loop, through the supervisor's handle on the zygote: a worker is a
confined child of the zygote that runs code and reports; a killed worker (or zygote) is replaced;
what a finished worker leaves behind is killed; a session's checkpoint restores the state from
before a run that died."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agenticraft.security import SecurityContext

from helpers import name_me, named, parent_of, wait_gone, wait_named_gone

pytestmark = pytest.mark.timeout(120)


class Workers:
    """Spawns workers of the module's process sandbox and discards them after the test."""

    def __init__(self, sandbox: Any) -> None:
        self.sandbox = sandbox
        self.supervisor = sandbox.supervisor
        self.context = sandbox.manager.authorize(
            SecurityContext("tester", resource_limits={"timeout_seconds": 10}), "execute")
        self.handles: list[Any] = []

    async def spawn(self, *, session: bool = False) -> Any:
        handle = await self.supervisor.spawn(self.sandbox.profile_for(self.context),
                                             prefork=False, session=session)
        self.handles.append(handle)
        return handle

    async def run(self, handle: Any, code: str, *, checkpoint: bool = False) -> Any:
        return await self.supervisor.run(handle, code, self.context.resource_limits,
                                         checkpoint=checkpoint)

    def close(self) -> None:
        for handle in self.handles:
            self.supervisor.discard(handle)


@pytest.fixture
async def workers(process_sandbox: Any) -> AsyncIterator[Workers]:
    made = Workers(process_sandbox)
    yield made
    made.close()


async def test_a_worker_is_a_confined_child_of_the_zygote(workers: Workers) -> None:
    handle = await workers.spawn()
    assert handle.ready["ev"] == "ready"
    assert handle.ready["scratch"] == handle.scratch
    assert handle.ready["applied"], "the worker reports which mechanisms it applied"
    if handle.keeper is None:
        assert handle.ready["pid"] == handle.pid
        assert parent_of(handle.pid) == workers.supervisor.zygote.pid
    else:  # its own PID namespace: zygote -> keeper -> init (pid 1) -> worker (pid 2)
        assert handle.ready["pid"] == 2
        assert parent_of(handle.pid) == handle.init
        assert parent_of(handle.init) == handle.keeper
        assert parent_of(handle.keeper) == workers.supervisor.zygote.pid
    outcome = await workers.run(handle, "import os\nme = os.getpid()\nprint('hello')")
    assert outcome.frame["ok"] is True
    assert outcome.frame["values"] == {"me": handle.ready["pid"]}
    assert outcome.stdout == "hello\n"


async def test_a_worker_keeps_running_after_a_user_exception(workers: Workers) -> None:
    handle = await workers.spawn()
    outcome = await workers.run(handle, "def f():\n    raise ValueError('bad')\nf()")
    error = outcome.frame["error"]
    assert (outcome.frame["ok"], error["ename"], error["evalue"]) == (False, "ValueError", "bad")
    assert "<sandbox>" in error["traceback"]
    assert "agenticraft" not in error["traceback"]  # only the user's own frames
    exited = await workers.run(handle, "raise SystemExit(3)")
    assert exited.frame["error"]["ename"] == "SystemExit"  # a result, not the worker's exit
    again = await workers.run(handle, "x = 1")
    assert handle.alive and again.frame["values"] == {"x": 1}


async def test_a_killed_worker_is_replaced_by_a_fresh_one(workers: Workers) -> None:
    first = await workers.spawn()
    await workers.run(first, "x = 'old'")
    os.kill(first.pid, signal.SIGKILL)
    assert wait_gone(first.pid)
    second = await workers.spawn()
    assert second.pid != first.pid
    outcome = await workers.run(second, "fresh = 'x' not in globals()")
    assert outcome.frame["values"] == {"fresh": True}


async def test_a_killed_zygote_is_restarted_on_the_next_spawn(workers: Workers) -> None:
    zygote = workers.supervisor.zygote
    old = zygote.pid
    os.kill(old, signal.SIGKILL)
    zygote.proc.wait(timeout=10)
    handle = await workers.spawn()
    assert zygote.pid not in (old, -1)
    assert parent_of(handle.keeper or handle.pid) == zygote.pid
    assert (await workers.run(handle, "ok = True")).frame["values"] == {"ok": True}


async def test_each_worker_gets_its_own_profile_also_when_sent_by_reference(
        workers: Workers) -> None:
    """A profile seen before goes to the zygote by reference only: two profiles alternating
    must never get each other's limits, and a reference the zygote does not know (it let the
    profile go, or another zygote answers) gets the profile sent whole again, not a failure."""
    manager, sup = workers.sandbox.manager, workers.supervisor
    profiles = {}
    for size in (3, 7):
        ctx = manager.authorize(SecurityContext("tester", resource_limits={
            "timeout_seconds": 10, "max_file_size_mb": size}), "execute")
        profiles[size] = (workers.sandbox.profile_for(ctx), ctx.resource_limits)
    code = "import resource\nresult = resource.getrlimit(resource.RLIMIT_FSIZE)[0] >> 20"
    for round_ in range(3):
        if round_ == 2:  # references the zygote never got
            sup.zygote._refs = {key: ref + 1000 for key, ref in sup.zygote._refs.items()}
        for size, (profile, limits) in profiles.items():
            handle = await sup.spawn(profile, prefork=False)
            workers.handles.append(handle)
            outcome = await sup.run(handle, code, limits)
            assert outcome.frame["values"] == {"result": size}, (round_, outcome.frame)
    assert sup.zygote.profile_refs and len(sup.zygote._refs) == 2


async def test_what_a_finished_worker_leaves_behind_is_killed(workers: Workers) -> None:
    handle = await workers.spawn()
    outcome = await workers.run(handle, (
        "import os, signal\nready, tell = os.pipe()\nleft = os.fork()\n"
        "if left == 0:\n" + "".join("    " + line + "\n" for line in
                                   name_me("acs-left-behind").splitlines())
        + "    os.write(tell, b'1')\n    while True:\n        signal.pause()\n"
        "os.read(ready, 1)\n"))  # the child is named before the run ends
    assert outcome.frame["ok"], outcome.frame
    assert named("acs-left-behind")
    workers.supervisor.release(handle)  # the worker exits; its child is re-parented
    # ... to the zygote (a subreaper) or the PID namespace's init; either way it is killed
    assert wait_named_gone("acs-left-behind")


async def test_a_session_checkpoint_restores_the_state_before_a_dead_run(
        workers: Workers) -> None:
    handle = await workers.spawn(session=True)
    holder = handle.pid
    assert (await workers.run(handle, "x = 1", checkpoint=True)).frame["ok"]
    assert handle.pid != holder  # the run's process became the live session
    died = await workers.run(handle, "x = 2\nimport os\nos._exit(9)", checkpoint=True)
    assert died.rolled_back and "exited with status 9" in died.crashed
    after = await workers.run(handle, "y = x", checkpoint=True)
    assert after.frame["values"] == {"y": 1}
