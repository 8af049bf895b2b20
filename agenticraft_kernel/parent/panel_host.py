"""The secure kernel's side of the panel: created in the parent, fed while cells run.

The parent process owns the panel's widgets and serves their comms itself (``parent_comm``):
frontend messages for them are handled here and never reach the sandbox, and the relay drops any
message the sandbox sends under one of their ids. While a cell runs, a task samples the running
cell's process tree from /proc every ``SAMPLE_INTERVAL`` seconds for the live gauges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agenticraft.wire.limits import ResourceLimits
from agenticraft_kernel.parent.comms import ParentComms
from agenticraft_kernel.parent.live_usage import TreeSampler

if TYPE_CHECKING:
    from agenticraft_kernel.parent.backends import ProcessRunner, RestrictedRunner
    from agenticraft_kernel.parent.kernel import SecureKernel

SAMPLE_INTERVAL = 0.25


class PanelHost:
    """One panel per kernel (``%secure_panel`` shows it again), on the parent's own comms."""

    def __init__(self, kernel: SecureKernel) -> None:
        self.kernel = kernel
        self.panel: Any = None
        self.comms: ParentComms | None = None

    # -- comms -----------------------------------------------------------------------------------
    def owns(self, comm_id: str) -> bool:
        """Comm ids of the parent's own widgets: never the worker's to use."""
        return self.comms is not None and self.comms.owns(comm_id)

    def targets(self) -> dict[str, str]:
        return {} if self.comms is None else {cid: c.target_name
                                              for cid, c in self.comms.comms.items()}

    def handle(self, msg_type: str, msg: dict[str, Any]) -> None:
        """A frontend message for one of the panel's comms: answered here, never relayed."""
        if self.comms is None or msg_type == "comm_open":
            return
        try:
            self.comms.handle(msg_type, msg)
        except Exception:
            self.kernel.log.exception("the security panel could not handle %s", msg_type)

    def _publish_comm(self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any],
                      buffers: list[bytes] | None) -> None:
        k = self.kernel
        assert k.session is not None
        k.session.send(k.iopub_socket, msg_type, content, parent=k.get_parent("shell"),
                       ident=f"comm-{content.get('comm_id', '')}".encode(), buffers=buffers,
                       metadata=metadata)

    def publish_update(self, display_id: str, data: dict[str, Any]) -> None:
        """Refresh a display the parent made (the text panel's updates)."""
        k = self.kernel
        assert k.session is not None
        k.session.send(k.iopub_socket, "update_display_data",
                       {"data": data, "metadata": {}, "transient": {"display_id": display_id}},
                       parent=k.get_parent("shell"), ident=k._topic("update_display_data"))

    # -- the panel -------------------------------------------------------------------------------
    def ensure(self, runner: ProcessRunner | RestrictedRunner) -> Any:
        """The panel, created on first use."""
        if self.panel is None:
            from agenticraft_kernel.parent import comms as parent_comm
            from agenticraft_kernel.views.panel import make_panel
            if self.comms is None:
                self.comms = parent_comm.install(self._publish_comm)
            k = self.kernel
            assert k.manager is not None
            log = k.manager.audit

            def audit(kind: str | None, user: str | None, n: int) -> list[dict[str, Any]]:
                if not hasattr(log, "query"):
                    return []
                return list(log.query(user_id=user, event_type=kind, limit=n))

            self.panel = make_panel(runner.context, runner.enforcement(),
                                    recent=lambda: list(k.recent_cells), audit=audit,
                                    title=f"kernel {k.kernel_id[:8]}")
        return self.panel

    def start(self, label: str, limits: ResourceLimits,
              holder: Callable[[], int | None]) -> asyncio.Task[None] | None:
        """A cell starts: show its limits and sample it until ``stop`` (if a panel exists)."""
        if self.panel is None:
            return None
        try:
            self.panel.start_cell(label, limits)
        except Exception:
            self.kernel.log.exception("the security panel could not show a running cell")
            return None
        return asyncio.get_running_loop().create_task(self._sample(holder))

    async def _sample(self, holder: Callable[[], int | None]) -> None:
        sampler = TreeSampler(holder)
        started = time.monotonic()
        while True:
            memory, cpu = sampler.sample()
            try:
                self.panel.sample(time.monotonic() - started, memory, cpu)
            except Exception:
                self.kernel.log.exception("the security panel could not be updated")
                return
            await asyncio.sleep(SAMPLE_INTERVAL)

    @staticmethod
    def stop(task: asyncio.Task[None] | None) -> None:
        if task is not None:
            task.cancel()

    def idle(self) -> None:
        """After every cell: the last cells, the audit history and idle gauges."""
        if self.panel is not None:
            try:
                self.panel.end_cell()
            except Exception:
                self.kernel.log.exception("the security panel could not be updated")
