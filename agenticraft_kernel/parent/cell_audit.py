"""The kernel's audit records, written by the parent kernel (never from inside the sandbox).

One ``execution`` record per cell: user, kernel id, cell digest, effective limits, usage, outcome.
Every limit violation and every denial gets its own ``violation`` record. The kernel writes these
itself (its session's ``request`` writes nothing) because a cell record needs fields the
agent API's ``SandboxManager.audited`` does not carry (kernel id, execution count, usage of a run
killed for a limit, denials the worker reported) and because completions and inspections are
not executions to audit. The records' shapes are the builders' in ``security.records``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from agenticraft.security import records
from agenticraft.security.context import SecurityContext
from agenticraft.wire.limits import Usage


class KernelAudit:
    """Writes this kernel's records to the manager's audit log."""

    def __init__(self, log: Any, kernel_id: str,
                 on_cell: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.log = log
        self.kernel_id = kernel_id
        self.on_cell = on_cell  # sees every cell record as written (the panel's "last cells")

    def kernel_event(self, event: str, user_id: str, ctx: SecurityContext | None = None,
                     **fields: Any) -> None:
        if ctx is not None:
            user_id = ctx.user_id
            fields.update(sandbox_type=ctx.sandbox_type, limits=ctx.resource_limits.as_dict())
        self.log.record(records.session(user_id, event, kernel_id=self.kernel_id, **fields))

    def cell(self, ctx: SecurityContext, code: str, *, outcome: str, started: float,
             usage: Usage | Mapping[str, Any] | None, execution_count: int | None,
             cell_id: str | None = None, **fields: Any) -> str:
        """The execution record of one cell; returns the cell digest for related records."""
        digest = records.code_digest(code)
        record = self.log.record(records.kernel_cell(
            ctx.user_id, ctx.sandbox_type, digest, outcome, kernel_id=self.kernel_id,
            execution_count=execution_count, cell_id=cell_id,
            limits=ctx.resource_limits.as_dict(), usage=usage,
            duration_ms=round((time.perf_counter() - started) * 1000, 3), **fields))
        if self.on_cell is not None:
            self.on_cell(record)
        return digest

    def violation(self, ctx: SecurityContext | None, user_id: str, limit: str,
                  code: str | None = None, **fields: Any) -> None:
        if code is not None:
            fields["code_sha256"] = records.code_digest(code)
        present = {name: value for name, value in fields.items() if value is not None}
        self.log.record(records.violation(ctx.user_id if ctx else user_id, limit,
                                          kernel_id=self.kernel_id, **present))

