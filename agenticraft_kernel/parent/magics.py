"""The magics the secure kernel's parent answers (the trusted side; user code never sees them).

``%%secure`` is parsed and resolved here before anything runs: it can only tighten the kernel's
context (``cell_context``). A cell whose tightening the session can apply per run runs in the
session (variables shared); otherwise it runs in a fresh sandbox, with ``--in``/``--out``
copying plain data from and to the session. ``%secure_status``, ``%secure_audit`` and
``%secure_panel`` are views the parent builds from its own state and the audit log.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from agenticraft.wire import transfer
from agenticraft.wire.errors import ResourceLimitExceeded, SecurityException
from agenticraft_kernel.parent.cell_context import fresh_reasons, resolve_cell
from agenticraft_kernel.parent.magic_detect import MagicCall
from agenticraft_kernel.parent.relay import Relay
from agenticraft_kernel.views import audit_table as audit_view
from agenticraft_kernel.views import secure_args
from agenticraft_kernel.views.cell_summary import summary_bundle
from agenticraft_kernel.views.secure_args import EMPTY_CELL
from agenticraft_kernel.views.status import render_status
from agenticraft_kernel.worker.magics import LINE_MISUSE

if TYPE_CHECKING:
    from agenticraft_kernel.parent.backends import ProcessRunner, RestrictedRunner
    from agenticraft_kernel.parent.kernel import SecureKernel

    Runner = ProcessRunner | RestrictedRunner


def ok_reply(count: int) -> dict[str, Any]:
    return {"status": "ok", "execution_count": count, "user_expressions": {}, "payload": []}


class KernelMagics:
    """Serves one ``MagicCall`` per cell for ``kernel`` (see the module docstring)."""

    def __init__(self, kernel: SecureKernel) -> None:
        self.kernel = kernel

    async def run(self, call: MagicCall, relay: Relay, runner: Runner, code: str, count: int,
                  cell_id: str | None, extra: dict[str, Any]) -> dict[str, Any]:
        if call.name == "secure":
            return await self.secure(call, relay, runner, code, count, cell_id, extra)
        k = self.kernel
        assert k.kaudit is not None
        k._cell = None
        started = time.perf_counter()
        try:
            if call.name == "secure_line":
                raise UsageError(LINE_MISUSE)
            if call.name == "secure_status":
                self.status(relay, runner, call.line)
            elif call.name == "secure_audit":
                self.audit(relay, call.line)
            else:
                self.panel(relay, runner, call.line)
        except UsageError as exc:
            k.kaudit.cell(runner.context, code, outcome="usage_error", started=started,
                          usage={}, execution_count=count, cell_id=cell_id, served_by="kernel",
                          detail=str(exc)[:300])
            return k._error_reply(relay, "UsageError", str(exc), count)
        k.kaudit.cell(runner.context, code, outcome="ok", started=started, usage={},
                      execution_count=count, cell_id=cell_id, served_by="kernel")
        return ok_reply(count)

    # -- views -----------------------------------------------------------------------------------
    @staticmethod
    def _show(relay: Relay, data: dict[str, Any], display_id: str | None = None) -> None:
        relay.publish("display_data", {"data": data, "metadata": {}, "transient":
                                       {"display_id": display_id} if display_id else {}}, None)

    @staticmethod
    def _print(relay: Relay, text: str) -> None:
        relay.publish("stream", {"name": "stdout", "text": text}, None)

    def status(self, relay: Relay, runner: Runner, line: str) -> None:
        if secure_args.parse_no_options("%secure_status", line, secure_args.STATUS_DESCRIPTION):
            self._print(relay, secure_args.help_of("%secure_status",
                                                   secure_args.STATUS_DESCRIPTION))
            return
        where = (f"secure kernel {self.kernel.kernel_id}: every cell runs in the "
                 f"{runner.context.sandbox_type} sandbox")
        self._show(relay, render_status(runner.context, runner.enforcement(), where=where))

    def audit(self, relay: Relay, line: str) -> None:
        args = secure_args.parse_audit(line)
        if args.help:
            self._print(relay, secure_args.audit_help())
            return
        assert self.kernel.manager is not None
        self._show(relay, audit_view.secure_audit(self.kernel.manager.audit, args.n, args.user,
                                                  args.type, args.verify))

    def panel(self, relay: Relay, runner: Runner, line: str) -> None:
        if secure_args.parse_no_options("%secure_panel", line, secure_args.PANEL_DESCRIPTION):
            self._print(relay, secure_args.help_of("%secure_panel",
                                                   secure_args.PANEL_DESCRIPTION))
            return
        k = self.kernel
        panel = k.panels.ensure(runner)
        display_id = uuid.uuid4().hex
        self._show(relay, panel.bundle(), display_id)
        panel.update = lambda bundle: k.panels.publish_update(display_id, bundle)

    # -- %%secure --------------------------------------------------------------------------------
    async def secure(self, call: MagicCall, relay: Relay, runner: Runner, code: str, count: int,
                     cell_id: str | None, extra: dict[str, Any]) -> dict[str, Any]:
        k = self.kernel
        assert k.kaudit is not None and k.manager is not None
        kernel_ctx = runner.context
        started = time.perf_counter()
        request = None
        try:
            request = secure_args.parse_secure(call.line)
            if request.help:
                k._cell = None
                self._print(relay, secure_args.secure_help())
                return ok_reply(count)
            if not call.body.strip():
                raise UsageError(EMPTY_CELL)
            ctx = resolve_cell(k.manager, kernel_ctx, request)
            reasons = fresh_reasons(kernel_ctx, ctx, runner.sandbox_type)
            if reasons and (request.inputs or request.outputs) and \
                    runner.sandbox_type != "process":
                raise UsageError("%%secure: --in/--out need the kernel's session, and this "
                                 "restricted kernel keeps no variables between cells")
        except (UsageError, SecurityException) as exc:
            k._cell = None
            ename = "UsageError" if isinstance(exc, UsageError) else type(exc).__name__
            fields = {"magic": request.audit_fields()} if request else {"magic": {
                "line": call.line[:500]}}
            k.kaudit.cell(kernel_ctx, code, outcome="usage_error" if ename == "UsageError"
                          else "denied", started=started, usage={}, execution_count=count,
                          cell_id=cell_id, detail=f"{ename}: {exc}"[:500], **fields)
            return k._error_reply(relay, ename, str(exc), count)
        fields = {"magic": request.audit_fields()}
        if not reasons:
            started_run = time.monotonic()
            reply = await k._run_cell(relay, runner, code, call.body, extra, count, cell_id,
                                      ctx=ctx, fields=fields)
            if reply["status"] == "ok" and not request.quiet:
                last = k.recent_cells[-1] if k.recent_cells else {}
                self._show(relay, summary_bundle(
                    ctx, request.limits, last.get("usage") or {},
                    time.monotonic() - started_run, where="in this kernel's session",
                    unchanged="the kernel's limits"))
            return reply
        fields["fresh"] = reasons
        return await self.fresh(relay, request, ctx, call.body, code, count, cell_id, fields,
                                reasons)

    async def fresh(self, relay: Relay, request: secure_args.SecureRequest,
                    ctx: Any, body: str, code: str, count: int, cell_id: str | None,
                    fields: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
        """Run the cell in a fresh sandbox (the session cannot apply these limits per run)."""
        k = self.kernel
        assert k.kaudit is not None and k.manager is not None
        started = time.perf_counter()

        def failed(ename: str, evalue: str, outcome: str = "error",
                   traceback: list[str] | None = None, usage: Any = None) -> dict[str, Any]:
            assert k.kaudit is not None
            k.kaudit.cell(ctx, code, outcome=outcome, started=started, usage=usage,
                          execution_count=count, cell_id=cell_id,
                          error=f"{ename}: {evalue}"[:500], **fields)
            return k._error_reply(relay, ename, evalue, count, traceback)

        try:
            values = await self._session_values(request.inputs)
            wrapped = transfer.wrap(body, values, request.outputs)
        except transfer.TransferError as exc:
            k._cell = None
            return failed("TransferError", str(exc))
        monitor = k.panels.start(f"cell [{count}] (fresh sandbox)", ctx.resource_limits,
                                 lambda: None)
        task: asyncio.Future[Any] | None = None
        try:
            sandbox = await k.manager.get_sandbox(ctx.sandbox_type)
            task = asyncio.ensure_future(sandbox.run_authorized(
                wrapped, ctx, on_output=relay.output, audit=False))
            pending = k._cell == "interrupted"  # an interrupt that came while preparing
            k._fresh = task
            k._cell = "running"
            if pending:
                task.cancel()
            result = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task is None or not task.cancelled() or (current and current.cancelling()):
                raise
            return failed("KeyboardInterrupt", "interrupted; the fresh sandbox was stopped",
                          outcome="interrupted")
        except ResourceLimitExceeded as exc:
            return k._limit_failure(relay, None, ctx, code, exc, started, count, cell_id,
                                    fields)
        except (SecurityException, OSError) as exc:
            return k._security_failure(relay, None, ctx, code, exc, started, count, cell_id,
                                       fields)
        finally:
            k._fresh = None
            k._cell = None
            k.panels.stop(monitor)
            relay.flush()
        if not result.success:
            error = result.error
            ename, evalue = (error.ename, error.evalue) if error else ("Error", "")
            lines = (error.traceback.rstrip("\n").splitlines() if error and error.traceback
                     else None)
            return failed(ename, evalue, traceback=lines, usage=result.resource_usage)
        try:
            outs = transfer.collect(result, request.outputs)
        except transfer.TransferError as exc:
            return failed("TransferError", str(exc), usage=result.resource_usage)
        if outs and not await self._set_session_values(outs):
            return failed("TransferError", "--out: the results could not be stored in the "
                          "session", usage=result.resource_usage)
        k.kaudit.cell(ctx, code, outcome="ok", started=started, usage=result.resource_usage,
                      execution_count=count, cell_id=cell_id, truncated=result.truncated,
                      **fields)
        if not request.quiet:
            self._show(relay, summary_bundle(
                ctx, request.limits, result.resource_usage, result.execution_time_ms / 1000,
                where="fresh sandbox (" + ", ".join(reasons) + ")", returned=list(outs),
                unchanged="the kernel's limits"))
        return ok_reply(count)

    async def _session_values(self, names: tuple[str, ...]) -> dict[str, Any]:
        """``--in`` values from the session (checked again here: the worker is untrusted)."""
        if not names:
            return {}
        got = await self.kernel._ask_worker("get_vars", "", {"status": "error"},
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

    async def _set_session_values(self, values: dict[str, Any]) -> bool:
        got = await self.kernel._ask_worker("set_vars", "", {"status": "error"}, values=values)
        return got.get("status") == "ok"
