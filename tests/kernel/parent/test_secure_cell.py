"""``%%secure`` as one flow over a ``CellSite``: the same steps whichever kernel it runs in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from IPython.core.error import UsageError

from agenticraft.sandbox.result import ExecutionError, ExecutionResult
from agenticraft.security.context import SecurityContext
from agenticraft.wire.transfer import ERRORS_NAME, OUT_NAME
from agenticraft_kernel.parent.secure_cell import FRESH, PREPARING, SandboxedError, SecureCell
from agenticraft_kernel.views.secure_args import SecureRequest


class FakeSite:
    """A site that records what the flow asked of it."""

    unchanged = "the test's limits"

    def __init__(self, session: bool, result: ExecutionResult | None = None) -> None:
        self.session = session
        self.result = result if result is not None else ExecutionResult()
        self.said: list[str] = []
        self.shown: list[dict[str, Any]] = []
        self.ran: list[str] = []
        self.stored: dict[str, Any] = {}

    def say(self, text: str) -> None:
        self.said.append(text)

    def show(self, bundle: dict[str, Any]) -> None:
        self.shown.append(bundle)

    def show_live(self, bundle: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        self.shown.append(bundle)
        return self.shown.append

    def resolve(self, request: SecureRequest) -> SecurityContext:
        return SecurityContext("alice", ["execute"], request.limits, sandbox_type="process",
                               _resolved=True)

    def placement(self, ctx: SecurityContext, request: SecureRequest) -> list[str] | None:
        return None if self.session else ["a reason"]

    async def run_in_session(self, body: str, ctx: SecurityContext, fields: dict[str, Any]
                             ) -> tuple[Mapping[str, Any], float] | None:
        self.ran.append(body)
        return {"memory_mb": 1.0, "cpu_seconds": 0.1}, 0.5

    async def read_inputs(self, names: tuple[str, ...]) -> dict[str, Any]:
        return {name: 21 for name in names}

    async def run_fresh(self, code: str, ctx: SecurityContext,
                        fields: dict[str, Any]) -> ExecutionResult:
        self.ran.append(code)
        return self.result

    async def write_outputs(self, values: dict[str, Any]) -> None:
        self.stored.update(values)


def run(cell: SecureCell, site: FakeSite) -> None:
    asyncio.run(cell.run(site))


def test_help_runs_nothing() -> None:
    site = FakeSite(session=True)
    run(SecureCell("--help", "x = 1"), site)
    assert "usage: %%secure" in site.said[0] and site.ran == []


def test_an_empty_cell_is_a_usage_error_before_anything_runs() -> None:
    site = FakeSite(session=True)
    cell = SecureCell("--timeout 2", "  \n")
    with pytest.raises(UsageError, match="the cell is empty"):
        run(cell, site)
    assert cell.stage == PREPARING and site.ran == []


def test_session_cells_run_the_body_and_show_the_summary() -> None:
    site = FakeSite(session=True)
    cell = SecureCell("--timeout 2", "x = 1")
    run(cell, site)
    assert site.ran == ["x = 1"]
    assert cell.fields == {"magic": {"line": "--timeout 2", "limits": {"timeout_seconds": 2.0}}}
    assert "in this kernel's session" in site.shown[-1]["text/plain"]


def test_fresh_cells_carry_in_and_out_and_name_the_reasons() -> None:
    result = ExecutionResult({OUT_NAME: {"y": 42}, ERRORS_NAME: {}})
    site = FakeSite(session=False, result=result)
    cell = SecureCell("--in x --out y", "y = x * 2")
    run(cell, site)
    assert cell.stage == FRESH and cell.fields["fresh"] == ["a reason"]
    assert "x = 21" in site.ran[0]
    summary = site.shown[-1]["text/plain"]
    assert "fresh sandbox (a reason)" in summary and "returned y" in summary


def test_the_cells_own_error_keeps_its_name_and_traceback() -> None:
    error = ExecutionError("ZeroDivisionError", "division by zero", "Traceback\n  line 1\n")
    site = FakeSite(session=False, result=ExecutionResult(success=False, error=error))
    with pytest.raises(SandboxedError) as raised:
        run(SecureCell("", "1 / 0"), site)
    assert type(raised.value).__name__ == "ZeroDivisionError"
    assert raised.value.traceback_lines() == ["Traceback", "  line 1"]
