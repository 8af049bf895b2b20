"""``%secure_undo``: the session goes back to the state from before the last cell.

The session already forks a checkpoint before every cell (to roll back a cell that hits a limit);
the kernel's cells ask it to keep that checkpoint after a cell succeeds (``keep_undo``), so one
previous state is always at hand. ``%secure_undo`` resumes it: variables rebound, deleted or
mutated by the last cell are as they were before it. There is one such state: a second
``%secure_undo`` in a row is refused. Both outcomes are audited as a cell served by the kernel.
"""

from __future__ import annotations

import time
from typing import Any

from agenticraft.wire.errors import SandboxError
from agenticraft_kernel.parent.cell_audit import KernelAudit
from agenticraft_kernel.parent.relay import Relay
from agenticraft_kernel.parent.replies import error_reply, ok_reply

DONE = "Restored the variables from before the last cell (%secure_undo)."
NOTHING = ("Nothing to undo: %secure_undo restores the state from before the last cell, once. "
           "It was already undone, or no cell has run in this session yet (a cell that was "
           "rolled back after a limit does not count; a restarted session has no earlier state).")


async def secure_undo(kaudit: KernelAudit, relay: Relay, backend: Any, code: str, count: int,
                      cell_id: str | None) -> dict[str, Any]:
    """Serve one ``%secure_undo`` cell and return its ``execute_reply`` content."""
    started = time.perf_counter()
    try:
        restored = await backend.undo()
    except (SandboxError, OSError) as exc:
        kaudit.cell(backend.context, code, outcome="sandbox_error", started=started, usage={},
                    execution_count=count, cell_id=cell_id, served_by="kernel",
                    detail=f"{type(exc).__name__}: {exc}"[:500])
        return error_reply(relay, type(exc).__name__, str(exc), count)
    kaudit.cell(backend.context, code, outcome="undone" if restored else "undo_refused",
                started=started, usage={}, execution_count=count, cell_id=cell_id,
                served_by="kernel")
    if not restored:
        return error_reply(relay, "UsageError", NOTHING, count)
    relay.publish("stream", {"name": "stdout", "text": DONE + "\n"}, None)
    return ok_reply(count)
