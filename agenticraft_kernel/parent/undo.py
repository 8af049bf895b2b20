"""``%secure_undo``: the session goes back to the state from before the last cell.

The session forks a checkpoint before every cell (to roll back a cell that hits a limit); the
kernel's session keeps the checkpoint of the last cell it accepted, stopped, instead of ending it
(``ProcessSession(undo=True)``), so one earlier state is at hand. ``%secure_undo`` resumes it:
variables the last cell rebound, deleted or mutated are as they were before it. One state is
kept: a second ``%secure_undo`` in a row is refused, saying why. A cell rolled back after a limit
changed nothing, so ``%secure_undo`` after it takes back the cell before it. Completions,
inspections, widget messages and silent executions do not count as cells. Both outcomes are
audited: a cell record served by the kernel, and the session's own ``undo`` record.
"""

from __future__ import annotations

import time
from typing import Any

from agenticraft.wire.errors import NothingToUndo, SandboxError
from agenticraft_kernel.parent.cell_audit import KernelAudit
from agenticraft_kernel.parent.relay import Relay
from agenticraft_kernel.parent.replies import error_reply, ok_reply

DONE = "Restored the variables from before the last cell (%secure_undo)."


def undo_line(backend: Any) -> str:
    """Whether ``%secure_undo`` can go back now, and why not (``%secure_status``, the panel)."""
    available, reason = backend.undo_status()
    if available:
        return ("%secure_undo: available (restores the variables from before the last cell; "
                "files stay as they are)")
    return f"%secure_undo: not available: {reason}"


def refusal(reason: str) -> str:
    return (f"Nothing to undo: {reason}. %secure_undo restores the state from before the last "
            "cell, once.")


async def secure_undo(kaudit: KernelAudit, relay: Relay, backend: Any, code: str, count: int,
                      cell_id: str | None) -> dict[str, Any]:
    """Serve one ``%secure_undo`` cell and return its ``execute_reply`` content."""
    started = time.perf_counter()
    try:
        await backend.undo()
    except NothingToUndo as exc:
        kaudit.cell(backend.context, code, outcome="undo_refused", started=started, usage={},
                    execution_count=count, cell_id=cell_id, served_by="kernel",
                    detail=str(exc)[:300])
        return error_reply(relay, "UsageError", refusal(str(exc)), count)
    except (SandboxError, OSError) as exc:
        kaudit.cell(backend.context, code, outcome="sandbox_error", started=started, usage={},
                    execution_count=count, cell_id=cell_id, served_by="kernel",
                    detail=f"{type(exc).__name__}: {exc}"[:500])
        return error_reply(relay, type(exc).__name__, str(exc), count)
    kaudit.cell(backend.context, code, outcome="undone", started=started, usage={},
                execution_count=count, cell_id=cell_id, served_by="kernel")
    relay.publish("stream", {"name": "stdout", "text": DONE + "\n"}, None)
    return ok_reply(count)
