"""IPython magics of AgentiCraft Secure for stock kernels: ``%load_ext agenticraft_kernel``.

``%%secure`` runs its cell in a fresh sandbox of a process-wide ``SandboxManager`` (the agent
API's, so sandboxes stay warm): ``--in`` copies plain data in, ``--out`` copies plain results
back, output is printed as it arrives, and a violation is a one-line error, not a traceback.
``%secure_status``, ``%secure_audit`` and ``%secure_panel`` show the same views as in the secure
kernel. In the secure kernel the parent answers all of these itself; inside its sandbox only
``KernelAnsweredMagics`` is registered, which explains where a misplaced magic goes.
"""

from __future__ import annotations

import queue
import sys
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

from agenticraft.wire import transfer
from agenticraft_kernel.views import secure_args
from agenticraft_kernel.views.secure_args import EMPTY_CELL
from agenticraft_kernel.worker.magics import LINE_MISUSE

_DONE = object()
RECENT_KEPT = 20


def one_line(exc: BaseException) -> BaseException:
    """Make IPython show ``exc`` as one line ("Name: message") instead of a traceback."""
    name = type(exc).__name__
    exc._render_traceback_ = lambda: [f"\x1b[0;31m{name}\x1b[0m: {exc}"]  # type: ignore[attr-defined]
    return exc


class SandboxedError(Exception):
    """The cell's own exception, raised inside the sandbox; shown with the sandbox's traceback."""

    def __init__(self, ename: str, evalue: str, traceback: str) -> None:
        super().__init__(evalue)
        self.ename = ename
        self.traceback_text = traceback

    def _render_traceback_(self) -> list[str]:
        lines = self.traceback_text.rstrip("\n").splitlines()
        return lines or [f"\x1b[0;31m{self.ename}\x1b[0m: {self}"]


def sandboxed_error(ename: str, evalue: str, traceback: str) -> SandboxedError:
    """A ``SandboxedError`` whose class name is the cell's exception name (the error output's
    ename), e.g. ``ZeroDivisionError``."""
    name = ename if ename.isidentifier() else "SandboxedError"
    cls = type(name, (SandboxedError,), {"__module__": "sandbox"})
    return cls(ename, evalue, traceback)


@magics_class
class SecureMagics(Magics):
    """The magics for stock IPython kernels (see the module docstring)."""

    def __init__(self, shell: Any = None, manager: Any = None) -> None:
        super().__init__(shell)
        self._manager = manager
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)
        self.panel: Any = None
        self._count = 0

    @property
    def manager(self) -> Any:
        if self._manager is None:
            from agenticraft.agents.tools.runtime import default_manager
            self._manager = default_manager()
        return self._manager

    def _context(self, request: secure_args.SecureRequest | None = None) -> Any:
        """The effective context: the policy resolves the request (or the user's defaults)."""
        from agenticraft.agents.tools.runtime import default_user
        from agenticraft.security.context import SecurityContext
        from agenticraft.wire.errors import SecurityException
        request = request or secure_args.SecureRequest()
        ctx = SecurityContext(default_user(), request.permissions, request.limits,
                              sandbox_type=request.sandbox)
        try:
            return self.manager.authorize(ctx, "execute", action="secure_magic",
                                          record_allowed=False)
        except SecurityException as exc:
            raise one_line(exc) from None

    # -- %%secure --------------------------------------------------------------------------------
    @line_cell_magic
    def secure(self, line: str, cell: str | None = None) -> None:
        """Run the cell in a fresh sandbox under tighter limits (``%%secure --help``)."""
        if cell is None:
            raise UsageError(LINE_MISUSE)
        request = secure_args.parse_secure(line)
        if request.help:
            print(secure_args.secure_help())
            return
        if not cell.strip():
            raise UsageError(EMPTY_CELL)
        user_ns = self.shell.user_ns
        missing = [name for name in request.inputs if name not in user_ns]
        if missing:
            raise UsageError(f"%%secure: --in {', '.join(missing)}: no such variable in this "
                             "notebook")
        try:
            code = transfer.wrap(cell, {n: user_ns[n] for n in request.inputs},
                                 request.outputs)
        except transfer.TransferError as exc:
            raise one_line(exc) from None
        ctx = self._context(request)
        self._count += 1
        result, wall = self._run(ctx, code, request)
        if not result.success:
            error = result.error
            raise sandboxed_error(error.ename, error.evalue, error.traceback) if error else \
                one_line(RuntimeError("the sandboxed cell failed"))
        try:
            values = transfer.collect(result, request.outputs)
        except transfer.TransferError as exc:
            raise one_line(exc) from None
        user_ns.update(values)
        if not request.quiet:
            from IPython.display import display

            from agenticraft_kernel.views.cell_summary import summary_bundle
            display(summary_bundle(ctx, request.limits, result.resource_usage, wall,
                                   where="fresh sandbox", returned=list(values)), raw=True)

    def _run(self, ctx: Any, code: str, request: secure_args.SecureRequest) -> tuple[Any, float]:
        """Run on the engine loop; print output as it arrives; feed the panel meanwhile."""
        from agenticraft.agents.tools.runtime import submit
        from agenticraft.wire.errors import SecurityException
        outputs: queue.Queue[Any] = queue.Queue()
        started = time.monotonic()
        fields = {"magic": request.audit_fields(), "action": "secure_magic"}

        async def run() -> Any:
            sandbox = await self.manager.get_sandbox(ctx.sandbox_type)
            return await sandbox.run_authorized(code, ctx, on_output=outputs.put,
                                                audit_extra=fields)

        future = submit(run())
        future.add_done_callback(lambda _f: outputs.put(_DONE))
        panel = self.panel
        if panel is not None:
            panel.start_cell(f"%%secure cell {self._count}", ctx.resource_limits)
        record: dict[str, Any] = {"execution_count": self._count, "magic": fields["magic"],
                                  "limits": ctx.resource_limits.as_dict()}
        try:
            while True:
                try:
                    item = outputs.get(timeout=0.25)
                except queue.Empty:  # nothing printed lately: just move the time gauge
                    if panel is not None:
                        panel.sample(time.monotonic() - started, None, None)
                    continue
                if item is _DONE:
                    break
                if getattr(item, "kind", "") in ("stdout", "stderr"):
                    stream = sys.stderr if item.kind == "stderr" else sys.stdout
                    stream.write(str(item.data))
            wall = time.monotonic() - started
            try:
                result = future.result()
            except SecurityException as exc:
                record.update(outcome="limit_exceeded" if hasattr(exc, "limit") else "denied",
                              limit=getattr(exc, "limit", None), usage=getattr(exc, "usage", {}))
                raise one_line(exc) from None
            record.update(outcome="ok" if result.success else "error",
                          usage=result.resource_usage)
            return result, wall
        except KeyboardInterrupt:
            future.cancel()  # the engine kills the worker
            record["outcome"] = "interrupted"
            raise
        finally:
            record["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
            self.recent.append(record)
            if panel is not None:
                panel.end_cell()

    # -- views -----------------------------------------------------------------------------------
    def _enforcement(self) -> dict[str, str]:
        from agenticraft.sandbox.host_report import host_report
        return dict(host_report()["limits"])

    @line_magic
    def secure_status(self, line: str) -> None:
        """The effective security context and what this host enforces."""
        if secure_args.parse_no_options("%secure_status", line,
                                        secure_args.STATUS_DESCRIPTION):
            print(secure_args.help_of("%secure_status", secure_args.STATUS_DESCRIPTION))
            return
        from IPython.display import display

        from agenticraft_kernel.views.status import render_status
        ctx = self._context()
        display(render_status(ctx, self._enforcement(), where="stock kernel: each %%secure "
                              "cell runs in a fresh sandbox; other cells are NOT sandboxed"),
                raw=True)

    @line_magic
    def secure_audit(self, line: str) -> None:
        """Recent audit records (``%secure_audit --help``)."""
        args = secure_args.parse_audit(line)
        if args.help:
            print(secure_args.audit_help())
            return
        from IPython.display import display

        from agenticraft_kernel.views.audit_table import secure_audit
        display(secure_audit(self.manager.audit, args.n, args.user, args.type, args.verify),
                raw=True)

    @line_magic
    def secure_panel(self, line: str) -> None:
        """The security panel (limits, gauges, last cells, audit history)."""
        if secure_args.parse_no_options("%secure_panel", line, secure_args.PANEL_DESCRIPTION):
            print(secure_args.help_of("%secure_panel", secure_args.PANEL_DESCRIPTION))
            return
        from IPython.display import display

        from agenticraft_kernel.views.panel import make_panel
        if self.panel is None:
            log = self.manager.audit
            self.panel = make_panel(
                self._context(), self._enforcement(), recent=lambda: list(self.recent),
                audit=lambda kind, user, n: (log.query(user_id=user, event_type=kind, limit=n)
                                             if hasattr(log, "query") else []),
                title="stock kernel (%%secure cells only)")
        handle = display(self.panel.bundle(), raw=True, display_id=True)
        self.panel.update = lambda bundle: handle.update(bundle, raw=True)


def in_secure_kernel(ipython: Any) -> bool:
    """True inside the secure kernel's sandbox worker (its shell is ours)."""
    return type(ipython).__name__ == "WorkerShell" and type(ipython).__module__.startswith(
        "agenticraft_kernel")


def load_ipython_extension(ipython: Any, manager: Any = None) -> None:
    """``%load_ext agenticraft_kernel``: registers the magics (a no-op in the secure kernel,
    which provides them already)."""
    if in_secure_kernel(ipython):
        print("AgentiCraft Secure: %%secure, %secure_status, %secure_audit and %secure_panel "
              "are built into this kernel.")
        return
    existing = secure_magics_of(ipython)
    if existing is not None:  # loaded again: keep its panel and history
        if manager is not None:
            existing._manager = manager
        return
    ipython.register_magics(SecureMagics(ipython, manager=manager))


def secure_magics_of(ipython: Any) -> SecureMagics | None:
    """The registered ``SecureMagics`` instance (tests, and code that wants its panel)."""
    registry: Mapping[str, Any] = ipython.magics_manager.registry
    found = registry.get("SecureMagics")
    return found if isinstance(found, SecureMagics) else None
