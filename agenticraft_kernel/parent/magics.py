"""The magics the secure kernel's parent answers (the trusted side; user code never sees them).

``%%secure`` is ``secure_cell.SecureCell``, the same as in stock kernels; this module is only the
secure kernel's ``CellSite``: a cell may only tighten the kernel's context (``cell_context``); one
whose tightening the session can apply per run runs in the session (variables shared), any other
in a fresh sandbox, with ``--in``/``--out`` copying plain data from and to the session. The kernel
writes every cell's audit records itself (``KernelAudit``). ``%secure_status``, ``%secure_audit``
and ``%secure_panel`` are ``secure_cell.show_view`` over the kernel's state and audit log.

The kernel is reached only through ``KernelPort``, the part of it the magics use.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from IPython.core.error import UsageError

from agenticraft.sandbox import SandboxManager
from agenticraft.sandbox.result import ExecutionResult
from agenticraft.security.context import SecurityContext
from agenticraft.wire import transfer
from agenticraft.wire.errors import ResourceLimitExceeded, SecurityException
from agenticraft_kernel.parent.backends import RestrictedBackend, SessionBackend
from agenticraft_kernel.parent.cell_audit import KernelAudit
from agenticraft_kernel.parent.cell_context import fresh_reasons, resolve_cell
from agenticraft_kernel.parent.cell_state import CellState
from agenticraft_kernel.parent.magic_detect import MagicCall
from agenticraft_kernel.parent.panel_host import PanelHost
from agenticraft_kernel.parent.relay import Relay
from agenticraft_kernel.parent.replies import error_reply, ok_reply
from agenticraft_kernel.parent.secure_cell import (
    PREPARING,
    Interrupted,
    SandboxedError,
    SecureCell,
    show_view,
)
from agenticraft_kernel.parent.undo import secure_undo, undo_line
from agenticraft_kernel.views.secure_args import SecureRequest

Backend = SessionBackend | RestrictedBackend


class KernelPort(Protocol):
    """What the magics use of the secure kernel (public members only)."""

    kernel_id: str
    manager: SandboxManager | None
    kaudit: KernelAudit | None
    recent_cells: deque[dict[str, Any]]
    panels: PanelHost
    cell: CellState

    async def run_in_session(self, relay: Relay, backend: Backend, code: str, run_code: str,
                             extra: dict[str, Any], count: int, cell_id: str | None, *,
                             ctx: SecurityContext | None = None,
                             fields: dict[str, Any] | None = None) -> dict[str, Any]: ...

    async def ask_worker(self, kind: str, code: str, default: dict[str, Any],
                         relay: Relay | None = None, **extra: Any) -> dict[str, Any]: ...

    def limit_failure(self, relay: Relay, backend: Backend | None, ctx: SecurityContext,
                      code: str, exc: ResourceLimitExceeded, started: float, count: int,
                      cell_id: str | None, fields: dict[str, Any]) -> dict[str, Any]: ...

    def security_failure(self, relay: Relay, backend: Backend | None, ctx: SecurityContext,
                         code: str, exc: BaseException, started: float, count: int,
                         cell_id: str | None, fields: dict[str, Any]) -> dict[str, Any]: ...

    def publish_update(self, display_id: str, data: dict[str, Any]) -> None: ...


class RelayScreen:
    """A magic's output in the secure kernel: IOPub messages under the cell's request."""

    def __init__(self, relay: Relay, publish_update: Callable[[str, dict[str, Any]], None]
                 ) -> None:
        self.relay = relay
        self._publish_update = publish_update

    def say(self, text: str) -> None:
        self.relay.publish("stream", {"name": "stdout", "text": text}, None)

    def show(self, bundle: dict[str, Any], display_id: str | None = None) -> None:
        self.relay.publish("display_data", {"data": bundle, "metadata": {}, "transient":
                                            {"display_id": display_id} if display_id else {}},
                           None)

    def show_live(self, bundle: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        display_id = uuid.uuid4().hex
        self.show(bundle, display_id)
        return lambda data: self._publish_update(display_id, data)


class KernelViews:
    """What ``%secure_status``, ``%secure_audit`` and ``%secure_panel`` show in this kernel."""

    def __init__(self, kernel: KernelPort, backend: Backend) -> None:
        self.kernel = kernel
        self.backend = backend
        self.panels = kernel.panels
        self.where = (f"secure kernel {kernel.kernel_id}: every cell runs in the "
                      f"{backend.context.sandbox_type} sandbox")

    def context(self) -> SecurityContext:
        return self.backend.context

    def enforcement(self) -> Mapping[str, str]:
        return self.backend.enforcement()

    def audit_log(self) -> Any:
        assert self.kernel.manager is not None
        return self.kernel.manager.audit

    def notes(self) -> tuple[str, ...]:
        return (undo_line(self.backend),)


class KernelMagics:
    """Serves one ``MagicCall`` per cell for the kernel (see the module docstring)."""

    def __init__(self, kernel: KernelPort) -> None:
        self.kernel = kernel

    async def run(self, call: MagicCall, relay: Relay, backend: Backend, code: str, count: int,
                  cell_id: str | None, extra: dict[str, Any]) -> dict[str, Any]:
        k = self.kernel
        assert k.kaudit is not None
        if call.name == "secure":
            site = KernelCellSite(k, relay, backend, code, count, cell_id, extra)
            return await site.serve(SecureCell(call.line, call.body))
        k.cell.idle()
        if call.name == "secure_undo":
            return await secure_undo(k.kaudit, relay, backend, code, count, cell_id)
        started = time.perf_counter()
        try:
            show_view(call.name, call.line, RelayScreen(relay, k.publish_update),
                      KernelViews(k, backend))
        except UsageError as exc:
            k.kaudit.cell(backend.context, code, outcome="usage_error", started=started,
                          usage={}, execution_count=count, cell_id=cell_id, served_by="kernel",
                          detail=str(exc)[:300])
            return error_reply(relay, "UsageError", str(exc), count)
        k.kaudit.cell(backend.context, code, outcome="ok", started=started, usage={},
                      execution_count=count, cell_id=cell_id, served_by="kernel")
        return ok_reply(count)


class KernelCellSite(RelayScreen):
    """One ``%%secure`` cell in the secure kernel: in the session, or in a fresh sandbox."""

    unchanged = "the kernel's limits"

    def __init__(self, kernel: KernelPort, relay: Relay, backend: Backend, code: str,
                 count: int, cell_id: str | None, extra: dict[str, Any]) -> None:
        super().__init__(relay, kernel.publish_update)
        self.kernel = kernel
        self.backend = backend
        self.code = code
        self.count = count
        self.cell_id = cell_id
        self.extra = extra
        self.reply: dict[str, Any] | None = None  # the session's reply, when it ran the cell

    async def serve(self, cell: SecureCell) -> dict[str, Any]:
        """Run ``cell``; its records and the reply (a failure is one error output)."""
        k = self.kernel
        assert k.kaudit is not None
        started = time.perf_counter()
        try:
            await cell.run(self)
        except (UsageError, SecurityException) as exc:
            if cell.stage != PREPARING:
                return self._failed(cell, exc, started)
            k.cell.idle()
            ename = "UsageError" if isinstance(exc, UsageError) else type(exc).__name__
            k.kaudit.cell(self.backend.context, self.code,
                          outcome="usage_error" if ename == "UsageError" else "denied",
                          started=started, usage={}, execution_count=self.count,
                          cell_id=self.cell_id, detail=f"{ename}: {exc}"[:500],
                          **cell.magic_fields())
            return error_reply(self.relay, ename, str(exc), self.count)
        except (transfer.TransferError, SandboxedError, Interrupted, OSError) as exc:
            return self._failed(cell, exc, started)
        if self.reply is not None:
            return self.reply
        if cell.result is not None:  # a fresh sandbox ran it
            assert cell.ctx is not None
            k.kaudit.cell(cell.ctx, self.code, outcome="ok", started=started,
                          usage=cell.result.resource_usage, execution_count=self.count,
                          cell_id=self.cell_id, truncated=cell.result.truncated, **cell.fields)
        return ok_reply(self.count)

    def _failed(self, cell: SecureCell, exc: BaseException, started: float) -> dict[str, Any]:
        """A fresh-sandbox cell that failed: its records and its error output."""
        k = self.kernel
        assert k.kaudit is not None and cell.ctx is not None
        if isinstance(exc, ResourceLimitExceeded):
            return k.limit_failure(self.relay, None, cell.ctx, self.code, exc, started,
                                   self.count, self.cell_id, cell.fields)
        if isinstance(exc, SecurityException | OSError):
            return k.security_failure(self.relay, None, cell.ctx, self.code, exc, started,
                                      self.count, self.cell_id, cell.fields)
        outcome, traceback = "error", None
        ename = getattr(exc, "ename", type(exc).__name__)
        if isinstance(exc, Interrupted):
            outcome = "interrupted"
        elif isinstance(exc, SandboxedError):
            traceback = exc.traceback_lines()
        usage = cell.result.resource_usage if cell.result is not None else None
        k.kaudit.cell(cell.ctx, self.code, outcome=outcome, started=started, usage=usage,
                      execution_count=self.count, cell_id=self.cell_id,
                      error=f"{ename}: {exc}"[:500], **cell.fields)
        return error_reply(self.relay, ename, str(exc), self.count, traceback)

    # -- CellSite ----------------------------------------------------------------------------
    def resolve(self, request: SecureRequest) -> SecurityContext:
        assert self.kernel.manager is not None
        return resolve_cell(self.kernel.manager, self.backend.context, request)

    def placement(self, ctx: SecurityContext, request: SecureRequest) -> list[str] | None:
        reasons = fresh_reasons(self.backend.context, ctx, self.backend.sandbox_type)
        if not reasons:
            return None
        if (request.inputs or request.outputs) and self.backend.sandbox_type == "restricted":
            raise UsageError("%%secure: --in/--out need the kernel's session, and this "
                             "restricted kernel keeps no variables between cells")
        return reasons

    async def run_in_session(self, body: str, ctx: SecurityContext, fields: dict[str, Any]
                             ) -> tuple[Mapping[str, Any], float] | None:
        k = self.kernel
        started = time.monotonic()
        self.reply = await k.run_in_session(self.relay, self.backend, self.code, body,
                                            self.extra, self.count, self.cell_id, ctx=ctx,
                                            fields=fields)
        if self.reply["status"] != "ok":
            return None
        last = k.recent_cells[-1] if k.recent_cells else {}
        return last.get("usage") or {}, time.monotonic() - started

    async def read_inputs(self, names: tuple[str, ...]) -> dict[str, Any]:
        """``--in`` values from the session (checked again here: the worker is untrusted)."""
        if not names:
            return {}
        got = await self.kernel.ask_worker("get_vars", "", {"status": "error"},
                                           names=list(names))
        errors = got.get("errors") if isinstance(got.get("errors"), dict) else {}
        if got.get("status") != "ok" or errors:
            raise transfer.TransferError("; ".join(str(v) for v in errors.values())
                                         or "--in: the session's variables could not be read")
        values = got.get("values") if isinstance(got.get("values"), dict) else {}
        missing = [n for n in names if n not in values]
        if missing:
            raise transfer.TransferError(f"--in {', '.join(missing)}: not returned by the "
                                         "session")
        return {name: values[name] for name in names}

    async def run_fresh(self, code: str, ctx: SecurityContext,
                        fields: dict[str, Any]) -> ExecutionResult:
        k = self.kernel
        assert k.manager is not None
        monitor = k.panels.start(f"cell [{self.count}] (fresh sandbox)", ctx.resource_limits,
                                 lambda: None)
        task: asyncio.Future[ExecutionResult] | None = None
        try:
            sandbox = await k.manager.get_sandbox(ctx.sandbox_type)
            # Unaudited run: this kernel writes the cell's record itself (KernelAudit.cell).
            task = asyncio.ensure_future(sandbox.run(code, ctx, self.relay.output))
            k.cell.fresh_run(task)
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task is None or not task.cancelled() or (current and current.cancelling()):
                raise
            raise Interrupted() from None
        finally:
            k.cell.idle()
            k.panels.stop(monitor)
            self.relay.flush()

    async def write_outputs(self, values: dict[str, Any]) -> None:
        if not values:
            return
        got = await self.kernel.ask_worker("set_vars", "", {"status": "error"}, values=values)
        if got.get("status") != "ok":
            raise transfer.TransferError("--out: the results could not be stored in the "
                                         "session")
