"""The kernel's backends, where cells run: a confined IPython session (stateful, rolled back on a
kill) or the restricted sandbox (one run per cell, bound names shown as the cell's output)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agenticraft.sandbox import SandboxManager
from agenticraft.security import SecurityContext
from agenticraft.wire.errors import SandboxError
from agenticraft_kernel.parent.backends import RestrictedBackend, SessionBackend, make_backend

from helpers import make_manager

pytestmark = pytest.mark.timeout(120)
EXECUTE = {"kind": "execute", "silent": False, "store_history": True}


class Collected:
    """The ``on_output``/``on_event`` callbacks of one run."""

    def __init__(self) -> None:
        self.outputs: list[str] = []
        self.events: list[dict[str, Any]] = []

    def output(self, item: Any) -> None:
        self.outputs.append(str(item.data))

    def event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[SandboxManager]:
    async with make_manager(tmp_path) as made:
        yield made


def context(manager: SandboxManager, sandbox_type: str) -> SecurityContext:
    return manager.authorize(SecurityContext("tester", sandbox_type=sandbox_type,
                                             resource_limits={"timeout_seconds": 10}), "execute")


def test_the_contexts_sandbox_type_picks_the_backend(manager: SandboxManager) -> None:
    assert isinstance(make_backend(manager, context(manager, "restricted")), RestrictedBackend)
    assert isinstance(make_backend(manager, context(manager, "process")), SessionBackend)


async def test_the_session_backend_keeps_state_across_cells(manager: SandboxManager) -> None:
    backend = SessionBackend(manager, context(manager, "process"))
    with pytest.raises(SandboxError, match="not running"):
        await backend.run("x = 1", EXECUTE, None, None)
    await backend.start()
    try:
        assert isinstance(backend.pid, int)
        first = Collected()
        reply = await backend.run("x = 6 * 7\nprint('hi')", EXECUTE, first.output, first.event)
        assert reply.success and reply.reply["status"] == "ok"
        assert "".join(first.outputs) == "hi\n"
        second = Collected()
        reply = await backend.run("x", EXECUTE, second.output, second.event)
        assert second.of_type("execute_result")[0]["data"]["text/plain"] == "42"
        assert not backend.running and not backend.lost_state
        assert "memory_mb" in backend.enforcement()
    finally:
        await backend.close()
    assert backend.session is None and backend.pid is None


async def test_the_restricted_backend_shows_bound_names(manager: SandboxManager) -> None:
    backend = make_backend(manager, context(manager, "restricted"))
    await backend.start()
    try:
        ran = Collected()
        reply = await backend.run("y = 2 + 3\nprint('out')", EXECUTE, ran.output, ran.event)
        assert reply.reply == {"status": "ok"}
        assert [e["type"] for e in ran.events] == ["cell_started", "display_data"]
        assert ran.of_type("display_data")[0]["data"] == {"text/plain": "y = 5"}
        assert "out" in "".join(ran.outputs)
        failed = Collected()
        reply = await backend.run("z = 1 / 0", EXECUTE, failed.output, failed.event)
        assert reply.reply["status"] == "error" and reply.reply["ename"] == "ZeroDivisionError"
        assert failed.of_type("error")[0]["ename"] == "ZeroDivisionError"
        completion = await backend.run("y", {"kind": "complete"}, None, None)
        assert completion.reply["matches"] == []
        assert backend.enforcement()["code_policy"].startswith("RestrictedPython")
        backend.send({"op": "input_reply"})  # no stdin: ignored
    finally:
        await backend.close()


async def test_only_cells_are_what_undo_takes_back(manager: SandboxManager) -> None:
    """The session backend keeps the state before each cell (``kind: execute``, not silent);
    its other requests (completions, comm messages, silent executions) leave that state alone.
    The restricted backend keeps no state and refuses, saying why."""
    from agenticraft.wire.errors import NothingToUndo

    backend = SessionBackend(manager, context(manager, "process"))
    await backend.start()
    try:
        with pytest.raises(NothingToUndo, match="no run has finished"):
            await backend.undo()
        await backend.run("x = 1", EXECUTE, None, None)
        await backend.run("x = 2", EXECUTE, None, None)
        assert (await backend.run("x.", {"kind": "complete", "cursor_pos": 2}, None,
                                  None)).success
        assert (await backend.run("tool = 1", {**EXECUTE, "silent": True}, None, None)).success
        await backend.undo()
        with pytest.raises(NothingToUndo, match="already undone"):
            await backend.undo()
        reply = await backend.run("x", {**EXECUTE, "user_expressions": {"v": "x"}}, None, None)
        assert reply.reply["user_expressions"]["v"]["data"]["text/plain"] == "1"
    finally:
        await backend.close()
    restricted = RestrictedBackend(manager, context(manager, "restricted"))
    with pytest.raises(NothingToUndo, match="restricted kernel keeps no state"):
        await restricted.undo()


async def test_a_cell_that_printed_leaves_no_thread_so_the_next_runner_is_forked_ahead(
        manager: SandboxManager) -> None:
    """The worker's stream flusher is a thread; alive between cells it kept every next cell's
    fork on the cell's path (a runner is forked ahead only with no other thread)."""
    backend = SessionBackend(manager, context(manager, "process"))
    await backend.start()
    try:
        out = Collected()
        reply = await backend.run("import threading\nprint('hi')\nn = threading.active_count()",
                                  EXECUTE, out.output, out.event)
        assert reply.success and "".join(out.outputs) == "hi\n"
        session = backend.session
        assert session is not None and session.handle is not None
        assert session.handle.next_prefork
        out = Collected()
        await backend.run("print(threading.active_count(), n)", EXECUTE, out.output, out.event)
        assert "".join(out.outputs) == "1 2\n"  # the flusher ran while it printed, then ended
    finally:
        await backend.close()
