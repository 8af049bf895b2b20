"""IPython magics of AgentiCraft Secure for stock kernels: ``%load_ext agenticraft_kernel``.

``%%secure`` is ``secure_cell.SecureCell``, the implementation the secure kernel uses; here every
cell runs in a fresh sandbox of the process-wide ``SandboxManager`` (the agent API's, so sandboxes
stay warm) and its context is bounded by the administrator's policy. ``--in`` copies plain data
in from the notebook, ``--out`` copies plain results back, output is printed as it arrives, and
a violation is a one-line error, not a traceback. ``%secure_status``, ``%secure_audit`` and
``%secure_panel`` are the secure kernel's views (``secure_cell.show_view``). In the secure kernel
the parent answers all of these itself; inside its sandbox only ``KernelAnsweredMagics`` is
registered, which explains where a misplaced magic goes.

A cell runs on the engine's event loop; what it prints or shows, and the panel's feeds, are
handed back to the notebook's thread (``NotebookThread``), which runs them as they come.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

from agenticraft.wire.transfer import TransferError
from agenticraft_kernel.parent.panel_host import PanelHost
from agenticraft_kernel.parent.replies import one_line
from agenticraft_kernel.parent.secure_cell import SecureCell, show_view
from agenticraft_kernel.views import audit_table
from agenticraft_kernel.views.secure_args import SecureRequest
from agenticraft_kernel.worker.magics import LINE_MISUSE

RECENT_KEPT = 20
STOCK_WHERE = ("stock kernel: each %%secure cell runs in a fresh sandbox; other cells are NOT "
               "sandboxed")


def shown_as_one_line(exc: BaseException) -> BaseException:
    """Make IPython show ``exc`` as one line ("Name: message") instead of a traceback."""
    exc._render_traceback_ = lambda: one_line(type(exc).__name__, str(exc))  # type: ignore[attr-defined]
    return exc


class NotebookThread:
    """Runs calls on the notebook's thread: at once when already there, else queued for the
    running cell's ``pump``."""

    def __init__(self) -> None:
        self.thread = threading.current_thread()
        self.calls: queue.Queue[Callable[[], None] | None] | None = None

    def __call__(self, call: Callable[[], None]) -> None:
        calls = self.calls
        if calls is None or threading.current_thread() is self.thread:
            call()
        else:
            calls.put(call)

    def open(self) -> None:
        """Queue calls from other threads from now on (before the cell is submitted)."""
        self.calls = queue.Queue()

    def pump(self, future: Future[Any]) -> None:
        """Run the queued calls until ``future`` is done (interruptible with Ctrl-C)."""
        calls = self.calls
        assert calls is not None
        future.add_done_callback(lambda _f: calls.put(None))
        try:
            while True:
                try:
                    call = calls.get(timeout=0.25)
                except queue.Empty:
                    continue
                if call is None:
                    return
                call()
        finally:
            self.calls = None


class NotebookScreen:
    """A magic's output in a stock kernel: printed and displayed on the notebook's thread."""

    def __init__(self, on_notebook: NotebookThread) -> None:
        self.on_notebook = on_notebook

    def say(self, text: str) -> None:
        self.on_notebook(lambda: print(text))

    def show(self, bundle: dict[str, Any]) -> None:
        from IPython.display import display
        self.on_notebook(lambda: display(bundle, raw=True))

    def show_live(self, bundle: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        from IPython.display import display
        handle = display(bundle, raw=True, display_id=True)
        return lambda data: self.on_notebook(lambda: handle.update(data, raw=True))

    def output(self, item: Any) -> None:
        """``on_output`` of the sandbox: the cell's stdout/stderr as it arrives."""
        if getattr(item, "kind", "") in ("stdout", "stderr"):
            stream = sys.stderr if item.kind == "stderr" else sys.stdout
            self.on_notebook(lambda: stream.write(str(item.data)))


@magics_class
class SecureMagics(Magics):
    """The magics for stock IPython kernels (see the module docstring)."""

    def __init__(self, shell: Any = None, manager: Any = None) -> None:
        super().__init__(shell)
        self._manager = manager
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)
        self.count = 0
        self.on_notebook = NotebookThread()
        self.panels = PanelHost(self._make_panel, dispatch=self.on_notebook)
        self.where = STOCK_WHERE

    @property
    def manager(self) -> Any:
        if self._manager is None:
            from agenticraft.agents.tools.runtime import default_manager
            self._manager = default_manager()
        return self._manager

    @manager.setter
    def manager(self, manager: Any) -> None:
        self._manager = manager

    @property
    def panel(self) -> Any:
        """The security panel, once ``%secure_panel`` showed it."""
        return self.panels.panel

    def context(self, request: SecureRequest | None = None) -> Any:
        """The effective context: the policy resolves the request (or the user's defaults)."""
        from agenticraft.security.context import SecurityContext, current_user
        request = request or SecureRequest()
        ctx = SecurityContext(current_user(), request.permissions, request.limits,
                              sandbox_type=request.sandbox)
        return self.manager.authorize(ctx, "execute", action="secure_magic",
                                      record_allowed=False)

    def enforcement(self) -> Mapping[str, str]:
        from agenticraft.sandbox.host_report import host_report
        return dict(host_report()["limits"])

    def audit_log(self) -> Any:
        return self.manager.audit

    def notes(self) -> tuple[str, ...]:
        return ()  # a stock kernel keeps no undo state

    def _make_panel(self) -> Any:
        from agenticraft_kernel.views.panel import make_panel
        return make_panel(self.context(), self.enforcement(), recent=lambda: list(self.recent),
                          audit=functools.partial(audit_table.query, self.manager.audit),
                          title="stock kernel (%%secure cells only)")

    # -- %%secure --------------------------------------------------------------------------------
    @line_cell_magic
    def secure(self, line: str, cell: str | None = None) -> None:
        """Run the cell in a fresh sandbox under tighter limits (``%%secure --help``)."""
        if cell is None:
            raise UsageError(LINE_MISUSE)
        from agenticraft.agents.tools.runtime import submit
        from agenticraft.wire.errors import SecurityException
        self.on_notebook.open()
        future = submit(SecureCell(line, cell).run(StockCellSite(self)))
        try:
            self.on_notebook.pump(future)
        except KeyboardInterrupt:
            future.cancel()  # the engine kills the worker
            raise
        try:
            future.result()
        except (TransferError, SecurityException) as exc:
            raise shown_as_one_line(exc) from None

    # -- views -----------------------------------------------------------------------------------
    def _view(self, name: str, line: str) -> None:
        from agenticraft.wire.errors import SecurityException
        try:
            show_view(name, line, NotebookScreen(self.on_notebook), self)
        except SecurityException as exc:
            raise shown_as_one_line(exc) from None

    @line_magic
    def secure_status(self, line: str) -> None:
        """The effective security context and what this host enforces."""
        self._view("secure_status", line)

    @line_magic
    def secure_audit(self, line: str) -> None:
        """Recent audit records (``%secure_audit --help``)."""
        self._view("secure_audit", line)

    @line_magic
    def secure_panel(self, line: str) -> None:
        """The security panel (limits, gauges, last cells, audit history)."""
        self._view("secure_panel", line)


class StockCellSite(NotebookScreen):
    """A ``%%secure`` cell in a stock kernel: always a fresh sandbox, bounded by the policy."""

    unchanged = "default limits"

    def __init__(self, magics: SecureMagics) -> None:
        super().__init__(magics.on_notebook)
        self.magics = magics

    def resolve(self, request: SecureRequest) -> Any:
        return self.magics.context(request)

    def placement(self, ctx: Any, request: SecureRequest) -> list[str] | None:
        return []  # every cell runs in a fresh sandbox

    async def run_in_session(self, body: str, ctx: Any,
                             fields: dict[str, Any]) -> tuple[Mapping[str, Any], float] | None:
        raise AssertionError("a stock kernel has no sandbox session")

    async def read_inputs(self, names: tuple[str, ...]) -> dict[str, Any]:
        user_ns = self.magics.shell.user_ns
        missing = [name for name in names if name not in user_ns]
        if missing:
            raise UsageError(f"%%secure: --in {', '.join(missing)}: no such variable in this "
                             "notebook")
        return {name: user_ns[name] for name in names}

    async def run_fresh(self, code: str, ctx: Any, fields: dict[str, Any]) -> Any:
        from agenticraft.security import records
        from agenticraft.wire.errors import ResourceLimitExceeded, SecurityException
        m = self.magics
        m.count += 1
        started = time.monotonic()
        monitor = m.panels.start(f"%%secure cell {m.count}", ctx.resource_limits, lambda: None)
        record: dict[str, Any] = {"execution_count": m.count, "magic": fields["magic"],
                                  "limits": ctx.resource_limits.as_dict()}
        try:
            sandbox = await m.manager.get_sandbox(ctx.sandbox_type)
            result = await sandbox.run_authorized(code, ctx, on_output=self.output,
                                                  audit_extra={**fields, "action": "secure_magic"})
        except ResourceLimitExceeded as exc:
            record.update(outcome="limit_exceeded", limit=exc.limit,
                          usage=records.usage_fields(exc.usage))
            raise
        except SecurityException:
            record.update(outcome="denied", limit=None, usage={})
            raise
        except asyncio.CancelledError:
            record["outcome"] = "interrupted"
            raise
        else:
            record.update(outcome="ok" if result.success else "error",
                          usage=result.resource_usage)
        finally:
            record["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
            m.recent.append(record)
            m.panels.stop(monitor)
            m.panels.idle()
        return result

    async def write_outputs(self, values: dict[str, Any]) -> None:
        self.on_notebook(lambda: self.magics.shell.user_ns.update(values))


def load_ipython_extension(ipython: Any, manager: Any = None) -> None:
    """Registers the magics in a stock kernel (``%load_ext agenticraft_kernel`` comes here
    through the package, which answers it itself inside the secure kernel's sandbox)."""
    existing = secure_magics_of(ipython)
    if existing is not None:  # loaded again: keep its panel and history
        if manager is not None:
            existing.manager = manager
        return
    ipython.register_magics(SecureMagics(ipython, manager=manager))


def secure_magics_of(ipython: Any) -> SecureMagics | None:
    """The registered ``SecureMagics`` instance (tests, and code that wants its panel)."""
    registry: Mapping[str, Any] = ipython.magics_manager.registry
    found = registry.get("SecureMagics")
    return found if isinstance(found, SecureMagics) else None
