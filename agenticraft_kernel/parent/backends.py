"""Parent side: the kernel's backends, where its cells run. A process-sandbox session (IPython
executor) or, for ``sandbox_type="restricted"`` kernels, the restricted sandbox.

Both expose the same small interface to the kernel: ``start``, ``run(code, extra, on_output,
on_event)`` returning a ``RunReply`` (or raising the engine's exceptions), ``interrupt``,
``send`` and ``close``. The kernel never touches sandbox internals.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from typing import Any

from agenticraft.sandbox import SandboxManager
from agenticraft.sandbox.process import ProcessSandbox, ProcessSession
from agenticraft.sandbox.result import ExecutionResult, RunReply
from agenticraft.security.context import SecurityContext
from agenticraft.wire.errors import NothingToUndo, SandboxError
from agenticraft.wire.limits import ResourceLimits, Usage

EXECUTOR = "agenticraft_kernel.worker.ipython_executor:IPythonExecutor"
OnOutput = Callable[[Any], Any]
OnEvent = Callable[[dict[str, Any]], Any]


async def process_sandbox(manager: SandboxManager, kind: str = "process"
                          ) -> tuple[ProcessSandbox, bool]:
    """The manager's process sandbox (or container sandbox, which runs the same sessions in a
    container: ``kind="container"``); (sandbox, owned) where owned means we must close it.

    Falls back to constructing it directly when the manager cannot list its sandbox classes
    (an engine build without the restricted sandbox module).
    """
    try:
        sandbox = await manager.get_sandbox(kind)
    except ImportError:
        sandbox = ProcessSandbox(manager)
        await sandbox.start()
        return sandbox, True
    assert isinstance(sandbox, ProcessSandbox)
    return sandbox, False


class SessionBackend:
    """Cells in one long-lived confined IPython session that rolls back on a kill."""

    sandbox_type = "process"

    def __init__(self, manager: SandboxManager, context: SecurityContext,
                 debugger: bool = True) -> None:
        self.manager = manager
        self.context = context
        if context.sandbox_type == "container":
            self.sandbox_type = "container"  # the same session, in a warm container
        self.session: ProcessSession | None = None
        self._sandbox: ProcessSandbox | None = None
        self._owned = False
        self.debugger = debugger  # the worker's loopback is up for the debugger's sockets

    async def start(self) -> None:
        self._sandbox, self._owned = await process_sandbox(self.manager, self.sandbox_type)
        # undo: the state from before the last cell is kept for %secure_undo
        self.session = ProcessSession(self._sandbox, self.context, executor=EXECUTOR, undo=True,
                                      loopback=self.debugger)
        await self.session.start()

    def debugger_unavailable(self) -> str | None:
        """Why the JupyterLab debugger cannot run in this session's sandbox, or None. It needs
        debugpy, the loopback of the sandbox's own network namespace (never the host's: with
        network_access=True, or without namespaces, there is none) and a process for
        debugpy's adapter."""
        if not self.debugger:
            return "the debugger is switched off (c.SecureKernel.debugger = False)"
        if importlib.util.find_spec("debugpy") is None:
            return "debugpy is not installed in the kernel's environment"
        handle = self.session.handle if self.session is not None else None
        applied = (handle.ready.get("applied") or {}) if handle is not None else None
        # (no worker now: the next run starts one with the same profile)
        if applied is not None and not (applied.get("namespaces") or {}).get("loopback"):
            return ("the sandbox has no network namespace of its own with a loopback (the "
                    "debugger's sockets must not be on the host's network)")
        if self.context.resource_limits.network_access is True:  # the host's network itself
            return ("network_access=True puts the sandbox on the host's network (the debugger's "
                    "sockets must not be there)")
        if self.context.resource_limits.max_processes < 2:
            return "max_processes leaves no process for the debugger's adapter"
        return None

    @property
    def debugging(self) -> bool:
        """True once the debugger runs in the session's worker: its threads live in that one
        process, so runs are not forked from a checkpoint (no rollback, no undo) until the
        worker is replaced."""
        return self.session is not None and self.session.pinned

    async def debug(self, dap: dict[str, Any] | None, on_event: OnEvent | None) -> RunReply:
        """One DAP request between cells (None: only collect replies kept in the worker). Run
        in the live worker itself; once the worker says its debugger listens, every later run
        of that worker is too (``ProcessSession.pinned``)."""
        if self.session is None:
            raise SandboxError("the sandbox session is not running")
        return await self.session.request("", on_event=on_event,
                                          extra={"kind": "debug", "request": dap},
                                          undoable=False, checkpoint=False,
                                          pin=lambda reply: bool(reply.reply.get("listening")))

    @property
    def pid(self) -> int | None:
        return self.session.pid if self.session else None

    async def run(self, code: str, extra: dict[str, Any], on_output: OnOutput | None,
                  on_event: OnEvent | None,
                  limits: ResourceLimits | None = None) -> RunReply:
        """One request in the session (the kernel audits cells itself); ``limits`` tightens
        the supervisor's limits for this run (a ``%%secure`` cell, already resolved). Only
        cells become what ``%secure_undo`` takes back: not completions, inspections or comm
        messages, nor silent executions (what frontend tools such as variable inspectors run)."""
        if self.session is None:
            raise SandboxError("the sandbox session is not running")
        return await self.session.request(code, on_output=on_output, on_event=on_event,
                                          extra=extra, limits=limits,
                                          undoable=extra.get("kind") == "execute"
                                          and not extra.get("silent"))

    async def undo(self) -> None:
        """Back to the state from before the last cell (``%secure_undo``); raises
        ``NothingToUndo`` saying why there is none."""
        if self.session is None:
            raise NothingToUndo("the sandbox session is not running")
        if self.debugging:
            raise NothingToUndo("the debugger was started in this session, and its cells run "
                                "without the checkpoint an undo goes back to (restart the "
                                "kernel to have undo again)")
        await self.session.undo()

    def undo_status(self) -> tuple[bool, str]:
        """Whether ``%secure_undo`` has a state to go back to, and if not, why not."""
        if self.session is None:
            return False, "the sandbox session is not running"
        return self.session.undo_status()

    def enforcement(self) -> dict[str, str]:
        """Which mechanism enforces which limit of this kernel's context, on this host."""
        if self._sandbox is None:
            return {}
        return self._sandbox.enforced_for(self.context)

    def network_refusals(self) -> list[str]:
        """The egress proxy's refusals during the last cell (a network allow-list)."""
        return self._sandbox.egress.refused(self.context) if self._sandbox is not None else []

    @property
    def lost_state(self) -> bool:
        """True when the last run killed the session beyond rollback (next run starts fresh)."""
        return self.session is not None and self.session.handle is None

    @property
    def running(self) -> bool:
        return self.session is not None and self.session.running

    def interrupt(self) -> None:
        if self.session is not None:
            self.session.interrupt()

    def send(self, message: dict[str, Any]) -> None:
        if self.session is not None:
            self.session.send(message)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self._owned and self._sandbox is not None:
            await self._sandbox.close()
        self._sandbox = None


class RestrictedBackend:
    """Cells through the restricted sandbox (the restricted Python subset, no IPython).

    Each cell is one ``execute_code`` call: names a cell binds are returned as its result, and
    the cell's printed output is relayed. Completion and inspection are not available.
    """

    sandbox_type = "restricted"
    pid = None
    lost_state = False
    running = False

    def __init__(self, manager: SandboxManager, context: SecurityContext) -> None:
        self.manager = manager
        self.context = context
        self._sandbox: Any = None
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        self._sandbox = await self.manager.get_sandbox("restricted")

    def enforcement(self) -> dict[str, str]:
        return dict(self._sandbox.host_report()) if self._sandbox is not None else {}

    async def run(self, code: str, extra: dict[str, Any], on_output: OnOutput | None,
                  on_event: OnEvent | None,
                  limits: ResourceLimits | None = None) -> RunReply:
        """One cell under the kernel's context (``limits`` is not used: the kernel runs
        ``%%secure`` cells of a restricted kernel in a fresh sandbox of their own)."""
        if extra.get("kind", "execute") != "execute":
            return RunReply({"status": "ok", "matches": [], "found": False, "data": {},
                             "metadata": {}, "comms": {}})
        self._task = asyncio.ensure_future(
            self._sandbox.execute_code(code, self.context, on_output=on_output))
        if on_event is not None:
            on_event({"type": "cell_started"})
        self.running = True
        try:
            result: ExecutionResult = await self._task
        finally:
            self.running = False
            self._task = None
        values = {"status": "ok" if result.success else "error"}
        if result.success and on_event is not None and len(result):
            text = "\n".join(f"{k} = {v!r}" for k, v in result.items())
            on_event({"type": "display_data", "data": {"text/plain": text}, "metadata": {}})
        elif result.error is not None:
            values.update(ename=result.error.ename, evalue=result.error.evalue,
                          traceback=result.error.traceback.splitlines())
            if on_event is not None:
                on_event({"type": "error", **{k: values[k]
                                               for k in ("ename", "evalue", "traceback")}})
        return RunReply(values, usage=Usage.measured(result.resource_usage), stdout=result.stdout,
                        stderr=result.stderr)

    def interrupt(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def undo(self) -> None:
        """Restricted kernels keep no state between cells: nothing to go back to."""
        raise NothingToUndo(self.undo_status()[1])

    @staticmethod
    def undo_status() -> tuple[bool, str]:
        return False, "a restricted kernel keeps no state between cells"

    def send(self, message: dict[str, Any]) -> None:
        """The restricted sandbox has no stdin."""

    async def close(self) -> None:
        self._sandbox = None


def make_backend(manager: SandboxManager, context: SecurityContext,
                 debugger: bool = True) -> SessionBackend | RestrictedBackend:
    if context.sandbox_type == "restricted":
        return RestrictedBackend(manager, context)
    return SessionBackend(manager, context, debugger)
