"""Issue 14 through the full sandbox: SandboxManager -> RESTRICTED -> execute_code, with run N
and run N+1 in the same warm worker."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from agenticraft.jail.confine import rlimits
from agenticraft.sandbox.restricted import RETAINED_SHARE
from agenticraft.security import SecurityContext
from agenticraft.wire.errors import ResourceLimitExceeded, SecurityViolation
from restricted_payloads import (
    ALL_SAFE,
    DEEP_C_RECURSION,
    GC_TRIGGER,
    LEFTOVER_GENERATOR,
    POISONING,
    RE_DEBUG_FLOOD,
    REPR_UNDER_RUN_CONTEXT,
    SIZE_SIDE_DOORS,
    STR_UNDER_RUN_CONTEXT,
    UNRAISABLE_FLOOD,
    WARNINGS_FLOOD,
    YIELD_IN_FINALLY,
)

from helpers import make_manager

pytestmark = pytest.mark.timeout(300)

LIMITS = {"timeout_seconds": 5, "memory_mb": 256, "max_output_bytes": 2_000}


@pytest.fixture(scope="module")
def restricted(tmp_path_factory):
    from agenticraft.sandbox.restricted import RestrictedSandbox

    manager = make_manager(tmp_path_factory.mktemp("restricted-isolation"))
    manager.policy = dataclasses.replace(manager.policy, allowed_imports=ALL_SAFE)
    sandbox = RestrictedSandbox(manager)
    sandbox.supervisor.start()
    sandbox._started = True
    yield sandbox
    asyncio.run(sandbox.close())


async def run(sandbox, code, user="iso", **limits):
    return await sandbox.execute_code(
        code, SecurityContext(user, resource_limits={**LIMITS, **limits}))


def workers(sandbox, user):
    return {h.pid for (owner, _), hs in sandbox._idle.items() if owner == user for h in hs}


@pytest.mark.parametrize(("poison", "check", "expected"),
                         [p[1:] for p in POISONING], ids=[p[0] for p in POISONING])
async def test_poisoning_does_not_reach_the_next_run_in_the_same_worker(restricted, poison,
                                                                        check, expected):
    user = "poison-" + str(abs(hash(poison)) % 10_000)
    first = await run(restricted, poison, user=user)
    assert first.success, first.error
    before = workers(restricted, user)
    assert len(before) == 1
    result = await run(restricted, check, user=user)
    assert workers(restricted, user) == before  # really the same warm worker
    assert result.success, result.error
    for name, value in expected.items():
        assert result[name] == value, (name, str(result))
    assert "PLANTED-RAN" not in result.stdout


async def test_leftover_generator_does_not_run_in_the_next_run(restricted):
    first = await run(restricted, LEFTOVER_GENERATOR, user="leftover")
    assert first.success, first.error
    before = workers(restricted, "leftover")
    second = await run(restricted, GC_TRIGGER, user="leftover")
    assert workers(restricted, "leftover") == before
    assert "LEFTOVER-FINALLY-RAN" not in second.stdout
    assert "LEFTOVER-FINALLY-RAN" in first.stdout


@pytest.mark.parametrize("source", YIELD_IN_FINALLY[:3])
async def test_yield_in_finally_is_refused(restricted, source):
    with pytest.raises(SecurityViolation, match="finally"):
        await run(restricted, source, user="yield")


async def test_result_repr_and_exception_str_run_inside_the_run(restricted):
    # memory_mb=128: one value may use 64 MB in the run (256 MB under the default context)
    result = await run(restricted, REPR_UNDER_RUN_CONTEXT, user="repr", memory_mb=128)
    assert result["shown"] == "pi=3.14"
    assert "unrepresentable" in result["huge"]
    failed = await run(restricted, STR_UNDER_RUN_CONTEXT, user="repr")
    assert not failed.success
    assert failed.error.ename == "Boom" and failed.error.evalue == "boom 3.1"


@pytest.mark.parametrize("source", [UNRAISABLE_FLOOD, WARNINGS_FLOOD],
                         ids=["unraisable", "warnings"])
async def test_side_output_counts_against_the_run_output_limit(restricted, source):
    # the run's own max_output_bytes stops it (language level), not only the host's pipe cap
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(restricted, source, user="side-output")
    assert info.value.limit == "max_output_bytes"
    text = getattr(info.value, "stdout", "") + getattr(info.value, "stderr", "")
    assert len(text.encode()) <= LIMITS["max_output_bytes"] + 200
    assert "agenticraft" not in text and "site-packages" not in text and "/usr/lib" not in text


async def test_re_debug_prints_nothing(restricted):
    result = await run(restricted, RE_DEBUG_FLOOD, user="side-output")
    assert result["r"] is True
    assert result.stdout + result.stderr == ""


async def test_unraisable_message_reaches_the_user_cleanly(restricted):
    result = await run(restricted, "def gen():\n    try:\n        yield 1\n    finally:\n"
                       "        raise ValueError('once')\ng = gen()\nnext(g)\ng = None\n",
                       user="side-output")
    text = result.stdout + result.stderr
    assert "ValueError: once" in text
    assert "agenticraft" not in text and ".py\"" not in text


@pytest.mark.parametrize("source", [p[1] for p in SIZE_SIDE_DOORS],
                         ids=[p[0] for p in SIZE_SIDE_DOORS])
async def test_size_side_door_is_a_language_level_limit(restricted, source):
    started = time.monotonic()
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(restricted, source, user="sizes")
    assert info.value.limit in ("memory_mb", "recursion"), info.value
    assert time.monotonic() - started < 4.0


# -- deep C recursion: the memory limit, never a crashed worker ---------------------------------

#: With 64 MB, 700,000 levels of 1- or 2-tuples (34-40 MB of heap) fit; hashing them needs
#: 45 MB of C stack on top (an 8 MB stack overflowed at ~131,000 levels: SIGSEGV).
DEEP = {"memory_mb": 64, "timeout_seconds": 30}


@pytest.mark.parametrize("source", [p[1] for p in DEEP_C_RECURSION],
                         ids=[p[0] for p in DEEP_C_RECURSION])
async def test_deep_c_recursion_ends_as_the_memory_limit(restricted, source):
    user = "deep-" + str(abs(hash(source)) % 10_000)
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(restricted, source.format(depth=700_000), user=user, **DEEP)
    assert info.value.limit == "memory_mb", info.value
    after = await run(restricted, "r = sum([1, 2, 3])", user=user, **DEEP)
    assert after.success and after["r"] == 6


@pytest.mark.parametrize("source", [p[1] for p in DEEP_C_RECURSION[:3]],
                         ids=[p[0] for p in DEEP_C_RECURSION[:3]])
async def test_deep_c_recursion_within_the_memory_limit_just_works(restricted, source):
    # 300,000 levels: 19 MB of stack; the worker crashed here with an 8 MB stack
    user = "deep-ok-" + str(abs(hash(source)) % 10_000)
    result = await run(restricted, source.format(depth=300_000), user=user)
    assert result.success, result.error
    before = workers(restricted, user)
    assert len(before) == 1
    after = await run(restricted, "r = len({(1, 2): 3})", user=user)
    assert workers(restricted, user) == before  # the same warm worker serves the next run
    assert after.success and after["r"] == 1


async def test_a_worker_left_holding_a_deep_stack_is_not_reused(restricted):
    # 1,200,000 levels under 256 MB: ~77 MB of stack stays resident after the run, more than
    # RETAINED_SHARE of the limit: the next run must not start with that much less memory
    assert 256 * RETAINED_SHARE < 77
    source = DEEP_C_RECURSION[0][1].format(depth=1_200_000)
    result = await run(restricted, source, user="deep-retained", memory_mb=256,
                       timeout_seconds=30)
    assert result.success, result.error
    assert workers(restricted, "deep-retained") == set()
    after = await run(restricted, "r = 1", user="deep-retained")
    assert after.success and len(workers(restricted, "deep-retained")) == 1


async def test_restricted_workers_get_a_stack_their_memory_cannot_fill(restricted):
    await run(restricted, "r = 1", user="stack-limit", memory_mb=96)
    (pid,) = workers(restricted, "stack-limit")
    with open(f"/proc/{pid}/limits") as fh:
        line = next(row for row in fh if row.startswith("Max stack size"))
    soft, hard = (int(value) for value in line.split()[3:5])
    assert soft == hard == rlimits.stack_bound_mb(96) * rlimits.MB
    assert restricted.supervisor.mechanisms["rlimits"]["stack_room_mb"] >= rlimits.STACK_ROOM_MB
    assert "DEGRADED" not in restricted.host_report()["c_stack"]
