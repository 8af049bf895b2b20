"""Frame budgets and run tags in real runs of a session (issue 13): what the worker sends is
weighed before it is decoded, a failure on the host side kills the run, and events of another
run never reach this one."""

from __future__ import annotations

import pytest

from agenticraft.security import SecurityContext
from agenticraft.wire.errors import ResourceLimitExceeded

from helpers import name_me, named, wait_named_gone

pytestmark = pytest.mark.timeout(120)

WORKER = ("import gc\nfrom agenticraft.jail.worker import Worker\n"
          "_w = next(o for o in gc.get_objects() if isinstance(o, Worker))\n")


@pytest.fixture
async def session(process_sandbox):
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 5, "memory_mb": 256,
                                                      "max_output_bytes": 10_000})
    async with process_sandbox.session(ctx) as session:
        yield session


async def test_a_result_over_the_output_allowance_is_a_limit_and_rolls_back(session):
    await session.run("x = 'kept'")
    with pytest.raises(ResourceLimitExceeded) as info:
        await session.run("x = 'lost'\nbig = 'y' * 3_000_000")
    assert info.value.limit == "max_output_bytes" and info.value.rolled_back
    assert (await session.run("same = x"))["same"] == "kept"


async def test_a_host_side_failure_kills_the_run(session):
    await session.run(name_me("relaybroke"))
    assert named("relaybroke")

    def on_event(event):
        raise RuntimeError("relay broke")

    with pytest.raises(RuntimeError, match="relay broke"):
        await session.request(WORKER + "_w.emit({'type': 'display_data', 'data': {}})\n"
                              "import time\ntime.sleep(60)", on_event=on_event)
    assert wait_named_gone("relaybroke")


async def test_events_of_another_run_are_dropped(session):
    seen = []
    reply = await session.request(
        WORKER + "import json, struct\nfrom agenticraft.wire import protocol\n"
        "_w.chan.sendall(protocol.encode({'ev': 'event', 'run': _w.run_id - 1,\n"
        "                                 'data': {'type': 'stale'}}))\n"
        "_w.chan.sendall(protocol.encode({'ev': 'event', 'run': None,\n"
        "                                 'data': {'type': 'between runs'}}))\n"
        "_w.emit({'type': 'mine'})", on_event=seen.append)
    assert reply.success
    assert seen == [{"type": "mine"}]
