"""``%%secure`` and the view magics: one implementation for the secure kernel and stock kernels.

Both kernels take the same steps: parse the options (``views.secure_args``), resolve the cell's
context, decide where it runs, copy ``--in`` values into a fresh sandbox and ``--out`` results
back (``wire.transfer``), show the summary line, and show errors the same way (one line, or the
sandbox's traceback for the cell's own exception). Only *where* the cell runs differs, and what
may bound its context; a ``CellSite`` says that:

- the secure kernel (``parent.magics``): the kernel's context is the ceiling; a cell whose limits
  the session can apply per run runs in the session, any other in a fresh sandbox;
- a stock kernel (``extension``): the administrator's policy is the ceiling; every cell runs in a
  fresh sandbox of the agent API's manager.

``%secure_status``, ``%secure_audit`` and ``%secure_panel`` are likewise one ``show_view`` over a
``ViewSource`` each kernel provides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from IPython.core.error import UsageError

from agenticraft.sandbox.result import ExecutionResult
from agenticraft.security.context import SecurityContext
from agenticraft.wire import transfer
from agenticraft_kernel.parent.panel_host import PanelHost
from agenticraft_kernel.parent.replies import one_line
from agenticraft_kernel.views import audit_table, secure_args
from agenticraft_kernel.views.cell_summary import summary_bundle
from agenticraft_kernel.views.secure_args import EMPTY_CELL, SecureRequest
from agenticraft_kernel.views.status import render_status
from agenticraft_kernel.worker.magics import LINE_MISUSE

SESSION, FRESH, PREPARING = "session", "fresh", "preparing"


# -- errors: how a failed cell is shown, in both kernels --------------------------------------
class SandboxedError(Exception):
    """The cell's own exception, raised inside the sandbox; shown with the sandbox's traceback."""

    def __init__(self, ename: str, evalue: str, traceback: str) -> None:
        super().__init__(evalue)
        self.ename = ename
        self.traceback_text = traceback

    def traceback_lines(self) -> list[str]:
        """The error output's traceback: the sandbox's, or one line when it sent none."""
        lines = self.traceback_text.rstrip("\n").splitlines()
        return lines or one_line(self.ename, str(self))

    def _render_traceback_(self) -> list[str]:  # how IPython shows it in a stock kernel
        return self.traceback_lines()


def sandboxed_error(result: ExecutionResult) -> SandboxedError:
    """A ``SandboxedError`` whose class name is the cell's exception name (the error output's
    ename), e.g. ``ZeroDivisionError``."""
    error = result.error
    ename, evalue, traceback = ((error.ename, error.evalue, error.traceback) if error
                                else ("Error", "the sandboxed cell failed", ""))
    name = ename if ename.isidentifier() else "SandboxedError"
    cls = type(name, (SandboxedError,), {"__module__": "sandbox"})
    return cls(ename, evalue, traceback)


class Interrupted(Exception):
    """The cell was interrupted while a fresh sandbox ran it; that sandbox was stopped."""

    ename = "KeyboardInterrupt"

    def __init__(self) -> None:
        super().__init__("interrupted; the fresh sandbox was stopped")


# -- where output goes, and where a cell runs ---------------------------------------------------
class Screen(Protocol):
    """Where a magic's output goes: the cell's output area."""

    def say(self, text: str) -> None:
        """Plain text on stdout (help, notes)."""

    def show(self, bundle: dict[str, Any]) -> None:
        """A mime bundle (a view, the summary line)."""

    def show_live(self, bundle: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        """A mime bundle that can be refreshed later: returns the function that refreshes it."""


class CellSite(Screen, Protocol):
    """Where a ``%%secure`` cell runs: what differs between the two kernels."""

    #: How the summary line names the limits a cell did not set.
    unchanged: str

    def resolve(self, request: SecureRequest) -> SecurityContext:
        """The cell's effective context (``SecurityException`` when it may not have it)."""

    def placement(self, ctx: SecurityContext, request: SecureRequest) -> list[str] | None:
        """None: the cell runs in the session; else why it needs a fresh sandbox ([] where every
        cell does)."""

    async def run_in_session(self, body: str, ctx: SecurityContext,
                             fields: dict[str, Any]) -> tuple[Mapping[str, Any], float] | None:
        """Run the cell in the session (its records and errors are the site's); (usage, wall
        seconds) when it ended well, else None."""

    async def read_inputs(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The ``--in`` values (``TransferError``/``UsageError`` when one cannot be had)."""

    async def run_fresh(self, code: str, ctx: SecurityContext,
                        fields: dict[str, Any]) -> ExecutionResult:
        """Run ``code`` in a fresh sandbox under ``ctx``; ``fields`` describe it for the audit.
        ``Interrupted`` when the user interrupted it."""

    async def write_outputs(self, values: dict[str, Any]) -> None:
        """Store the ``--out`` results where the notebook's variables are."""


@dataclasses.dataclass
class SecureCell:
    """One ``%%secure`` cell on its way; what is known so far is what its records need."""

    line: str
    body: str
    request: SecureRequest | None = None
    ctx: SecurityContext | None = None
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    stage: str = PREPARING
    result: ExecutionResult | None = None

    def magic_fields(self) -> dict[str, Any]:
        """The magic's options as they go into the cell's audit records."""
        if self.request is None:
            return {"magic": {"line": self.line[:500]}}
        return {"magic": self.request.audit_fields()}

    async def run(self, site: CellSite) -> None:
        """Parse, resolve, place and run the cell; failures are raised for the site to show."""
        self.request = request = secure_args.parse_secure(self.line)
        if request.help:
            site.say(secure_args.secure_help())
            return
        if not self.body.strip():
            raise UsageError(EMPTY_CELL)
        self.ctx = ctx = site.resolve(request)
        reasons = site.placement(ctx, request)
        self.fields = self.magic_fields()
        if reasons is None:
            self.stage = SESSION
            ran = await site.run_in_session(self.body, ctx, self.fields)
            if ran is not None and not request.quiet:
                usage, wall = ran
                site.show(summary_bundle(ctx, request.limits, usage, wall,
                                         where="in this kernel's session",
                                         unchanged=site.unchanged))
            return
        self.stage = FRESH
        if reasons:
            self.fields["fresh"] = reasons
        values = await site.read_inputs(request.inputs)
        code = transfer.wrap(self.body, values, request.outputs)
        self.result = result = await site.run_fresh(code, ctx, self.fields)
        if not result.success:
            raise sandboxed_error(result)
        outs = transfer.collect(result, request.outputs)
        await site.write_outputs(outs)
        if not request.quiet:
            where = "fresh sandbox" + (f" ({', '.join(reasons)})" if reasons else "")
            site.show(summary_bundle(ctx, request.limits, result.resource_usage,
                                     result.execution_time_ms / 1000, where=where,
                                     returned=list(outs), unchanged=site.unchanged))


# -- the views ----------------------------------------------------------------------------------
class ViewSource(Protocol):
    """What the views show: the notebook's context, this host's enforcement, the audit log."""

    #: Where this notebook's cells run (a line of ``%secure_status``).
    where: str
    panels: PanelHost

    def context(self) -> SecurityContext: ...

    def enforcement(self) -> Mapping[str, str]: ...

    def audit_log(self) -> Any: ...

    def notes(self) -> tuple[str, ...]:
        """Lines ``%secure_status`` adds under its table (the kernel: undo availability)."""
        ...


def show_view(name: str, line: str, screen: Screen, source: ViewSource) -> None:
    """``%secure_status``, ``%secure_audit`` or ``%secure_panel`` (``name`` without the %);
    ``secure_line`` is ``%secure`` used as a line magic. Bad options raise ``UsageError``."""
    if name == "secure_line":
        raise UsageError(LINE_MISUSE)
    if name == "secure_audit":
        args = secure_args.parse_audit(line)
        if args.help:
            screen.say(secure_args.audit_help())
        else:
            screen.show(audit_table.secure_audit(source.audit_log(), args.n, args.user,
                                                 args.type, args.verify))
        return
    prog, description = (("%secure_status", secure_args.STATUS_DESCRIPTION)
                         if name == "secure_status"
                         else ("%secure_panel", secure_args.PANEL_DESCRIPTION))
    if secure_args.parse_no_options(prog, line, description):
        screen.say(secure_args.help_of(prog, description))
    elif name == "secure_status":
        screen.show(render_status(source.context(), source.enforcement(), where=source.where,
                                  notes=source.notes()))
    else:
        source.panels.show(screen.show_live)
