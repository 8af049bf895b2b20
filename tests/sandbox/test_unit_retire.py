"""A session's older undo state is ended soon, not at once (``Unit.retire``): its exit would
hold up the fork of the next runner. It is still always ended: by the timer, once the next
run's runner has started, or when another is retired."""

from __future__ import annotations

import asyncio
import signal

import pytest

from agenticraft.sandbox import unit as unit_module
from agenticraft.sandbox.unit import Unit

pytestmark = pytest.mark.timeout(30)


async def _sleeper() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec("sleep", "60")


async def test_a_retired_process_is_killed_after_the_delay() -> None:
    proc = await _sleeper()
    unit = Unit(proc.pid)
    unit.retire(proc.pid)
    assert proc.returncode is None  # not at once
    assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL


async def test_the_next_run_or_the_next_retirement_ends_it_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unit_module, "RETIRE_AFTER", 3600)
    first, second = await _sleeper(), await _sleeper()
    unit = Unit(first.pid)
    unit.retire(first.pid)
    unit.retire(second.pid)  # the first ends now
    assert await asyncio.wait_for(first.wait(), 10) == -signal.SIGKILL
    assert second.returncode is None
    unit.end_retired()  # what the next run does once its runner has started
    assert await asyncio.wait_for(second.wait(), 10) == -signal.SIGKILL
    unit.end_retired()  # nothing left: nothing happens


async def test_a_process_already_gone_is_not_signalled_again() -> None:
    proc = await _sleeper()
    unit = Unit(proc.pid)
    proc.kill()
    await proc.wait()  # reaped: its pid may be anyone's now
    unit.retire(proc.pid)  # no pidfd for it: nothing is sent to that pid's new owner
    unit.end_retired()
