"""The trust boundary at run time in the engine's sandboxes: a process-sandbox worker (one-shot
and session) and a worker of the restricted sandbox's zygote load no host module. The kernel's
worker is checked in tests/kernel/e2e/test_worker_boundary.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from agenticraft.security import SecurityContext

from helpers import assert_sandbox_side_only, make_manager

pytestmark = pytest.mark.timeout(120)
LOADED = 'loaded = sorted(m for m in __import__("sys").modules if m.startswith("agenticraft"))'


async def test_exec_worker_loads_no_host_module(tmp_path: Path) -> None:
    async with make_manager(tmp_path) as manager:
        sandbox = await manager.get_sandbox("process")
        result = await sandbox.execute_code(LOADED, SecurityContext("tester"))
        assert result.success, result.error
        assert "agenticraft.jail.worker" in result["loaded"]  # really the worker's view
        assert_sandbox_side_only(result["loaded"])


async def test_session_worker_loads_no_host_module(tmp_path: Path) -> None:
    async with make_manager(tmp_path) as manager:
        sandbox = await manager.get_sandbox("process")
        session = sandbox.session(SecurityContext("tester"))
        try:
            assert (await session.run("x = 1")).success
            result = await session.run(LOADED)
        finally:
            await session.close()
        assert result.success, result.error
        assert_sandbox_side_only(result["loaded"])


async def test_restricted_executor_loads_no_host_module(tmp_path: Path) -> None:
    """Restricted code cannot look at ``sys.modules``; so a plain worker of the restricted
    sandbox's own zygote (with its preloads) runs the restricted executor, then reports."""
    from agenticraft.sandbox.profile import build_profile

    async with make_manager(tmp_path) as manager:
        sandbox = await manager.get_sandbox("restricted")
        ctx = manager.authorize(SecurityContext("tester"), "execute")
        supervisor = sandbox.supervisor
        profile = build_profile(ctx, scratch_root=supervisor.zygote.scratch_root)
        handle = await supervisor.spawn({**profile, "executor": "exec"}, prefork=False)
        try:
            code = ("from agenticraft.jail.executors import RestrictedExecutor\n"
                    "ran = RestrictedExecutor().run('y = 6 * 7', {})\n" + LOADED)
            outcome = await supervisor.run(handle, code, ctx.resource_limits)
        finally:
            supervisor.discard(handle)
        values = outcome.frame["values"]
        assert values["ran"] == {"y": 42}
        assert "agenticraft.jail.restricted" in values["loaded"]
        assert_sandbox_side_only(values["loaded"])
