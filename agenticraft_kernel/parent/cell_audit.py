"""The kernel's audit records, written by the parent kernel (never from inside the sandbox).

One ``execution`` record per cell: user, kernel id, cell digest, effective limits, usage, outcome.
Every limit violation and every denial gets its own ``violation`` record. The kernel writes these
itself instead of going through ``SandboxManager.audited`` because a cell record needs fields that
wrapper does not carry (kernel id, execution count, usage of a run killed for a limit, denials the
worker reported) and because completions and inspections are not executions to audit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from agenticraft.sandbox.base import code_digest
from agenticraft.security.context import SecurityContext


class KernelAudit:
    """Writes this kernel's records to the manager's audit log."""

    def __init__(self, log: Any, kernel_id: str,
                 on_cell: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.log = log
        self.kernel_id = kernel_id
        self.on_cell = on_cell  # sees every cell record as written (the panel's "last cells")

    def _base(self, ctx: SecurityContext | None, user_id: str) -> dict[str, Any]:
        return {"user_id": ctx.user_id if ctx else user_id, "kernel_id": self.kernel_id}

    def kernel_event(self, event: str, user_id: str, ctx: SecurityContext | None = None,
                     **fields: Any) -> None:
        record = {"type": "session", **self._base(ctx, user_id), "event": event, **fields}
        if ctx is not None:
            record.update(sandbox_type=ctx.sandbox_type, limits=ctx.resource_limits.as_dict())
        self.log.record(record)

    def cell(self, ctx: SecurityContext, code: str, *, outcome: str, started: float,
             usage: Mapping[str, Any] | None, execution_count: int | None,
             cell_id: str | None = None, **fields: Any) -> str:
        """The execution record of one cell; returns the cell digest for related records."""
        digest = code_digest(code)
        record = self.log.record({
            "type": "execution", **self._base(ctx, ""), "sandbox_type": ctx.sandbox_type,
            "code_sha256": digest, "execution_count": execution_count, "cell_id": cell_id,
            "limits": ctx.resource_limits.as_dict(), "usage": dict(usage or {}),
            "outcome": outcome, "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            **fields})
        if self.on_cell is not None:
            self.on_cell(record)
        return digest

    def violation(self, ctx: SecurityContext | None, user_id: str, limit: str,
                  code: str | None = None, **fields: Any) -> None:
        record = {"type": "violation", **self._base(ctx, user_id), "limit": limit, **fields}
        if code is not None:
            record["code_sha256"] = code_digest(code)
        self.log.record({k: v for k, v in record.items() if v is not None})
