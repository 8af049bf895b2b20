"""The restricted sandbox end to end: policy in a warm worker, hard limits from the supervisor."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from agenticraft.security import SecurityContext
from agenticraft.wire.errors import (
    ResourceLimitExceeded,
    SecurityViolation,
)

from helpers import make_manager, wait_gone

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def restricted(tmp_path_factory):
    from agenticraft.sandbox.restricted import RestrictedSandbox

    sandbox = RestrictedSandbox(make_manager(tmp_path_factory.mktemp("restricted")))
    sandbox.supervisor.start()
    sandbox._started = True
    yield sandbox
    asyncio.run(sandbox.close())


async def run(sandbox, code, user="tester", **limits):
    limits.setdefault("timeout_seconds", 1)
    return await sandbox.execute_code(code, SecurityContext(user, resource_limits=limits))


async def test_spec_example(restricted):
    result = await run(restricted, "result = sum([1, 2, 3, 4, 5])")
    assert str(result) == '{"result": 15}'
    assert result.sandbox_type == "restricted"
    assert "code_policy" in result.enforced


async def test_prints_are_captured(restricted):
    result = await run(restricted, "for i in range(3):\n    print(i)")
    assert result.stdout == "0\n1\n2\n"


async def test_policy_violation_is_raised_with_line(restricted):
    with pytest.raises(SecurityViolation) as info:
        await run(restricted, "x = 1\ny = ().__class__")
    assert info.value.lineno == 2
    assert "__class__" in str(info.value)


async def test_runtime_error_is_a_failed_result(restricted):
    result = await run(restricted, "x = [1][5]")
    assert not result.success
    assert result.error.ename == "IndexError"


@pytest.mark.parametrize(("code", "limits"), [
    ("while True:\n    pass", {}),
    ("x = sum(iter(int, 1))", {}),
    ("import re\nre.match('(a+)+$', 'a' * 40 + 'b')", {}),
    ("def f(n):\n    return f(n + 1)\nf(0)", {}),
    ("x = 10 ** 10 ** 10", {}),
    ("x = 'a' * 10 ** 12", {}),
    ("items = []\nwhile True:\n    items.append('x' * 1000000)", {"memory_mb": 128}),
    ("while True:\n    print('flood' * 1000)", {"max_output_bytes": 10_000}),
])
async def test_abuse_is_stopped_in_time(restricted, code, limits):
    limits = {"timeout_seconds": 1, **limits}
    policy = restricted.manager.policy
    if "import re" in code:  # the administrator allows the re module for this case
        restricted.manager.policy = dataclasses.replace(policy, allowed_imports=frozenset({"re"}))
    started = time.monotonic()
    try:
        with pytest.raises(ResourceLimitExceeded) as info:
            await run(restricted, code, **limits)
    finally:
        restricted.manager.policy = policy
    elapsed = time.monotonic() - started
    assert elapsed <= limits["timeout_seconds"] + 0.5, (code, elapsed, info.value)
    assert info.value.limit in ("timeout_seconds", "memory_mb", "recursion", "max_output_bytes")
    canary = await run(restricted, "result = 1 + 1")
    assert canary["result"] == 2


async def test_workers_are_reused_per_user_and_never_shared(restricted):
    a1 = await run(restricted, "x = 1", user="alice")
    pool = restricted._idle
    alice_workers = {h.pid for (user, _), hs in pool.items() if user == "alice" for h in hs}
    await run(restricted, "x = 1", user="alice")
    assert alice_workers == {h.pid for (user, _), hs in pool.items() if user == "alice"
                             for h in hs}
    await run(restricted, "x = 1", user="bob")
    bob_workers = {h.pid for (user, _), hs in pool.items() if user == "bob" for h in hs}
    assert bob_workers and not (bob_workers & alice_workers)
    assert a1.success


async def test_killed_worker_is_replaced(restricted):
    def carol_workers() -> set[int]:
        return {h.pid for (user, _), hs in restricted._idle.items() if user == "carol"
                for h in hs}

    await run(restricted, "x = 1", user="carol")
    before = carol_workers()
    assert len(before) == 1
    with pytest.raises(ResourceLimitExceeded):
        await run(restricted, "while True:\n    pass", user="carol")
    (killed,) = before
    assert killed not in carol_workers()
    assert wait_gone(killed)
    assert (await run(restricted, "result = 2 * 3", user="carol"))["result"] == 6
    assert carol_workers() and killed not in carol_workers()


async def test_names_do_not_leak_between_calls(restricted):
    await run(restricted, "secret = 'alice-data'", user="dave")
    result = await run(restricted, "x = 1", user="dave")
    assert "secret" not in result
    probe = await run(restricted, "try:\n    y = secret\nexcept NameError:\n    y = 'gone'",
                      user="dave")
    assert probe["y"] == "gone"


async def test_event_loop_is_not_blocked(restricted):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    with pytest.raises(ResourceLimitExceeded):
        await run(restricted, "x = sum(iter(int, 1))", timeout_seconds=0.5)
    task.cancel()
    assert ticks >= 20  # the loop kept running while the worker sat in one C call
